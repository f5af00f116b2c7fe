// Compiles one solc standard-JSON input (stdin) with the pinned solc-js of this folder and prints
// {"version", "output"} (stdout). Imports resolve from src/ (teegate's contracts) and node_modules/
// (@openzeppelin/contracts, as pinned in package-lock.json); nothing outside those two folders is read,
// so the build depends only on files the repository and its lockfile name.
'use strict';
const fs = require('fs');
const path = require('path');
const solc = require('solc');

const roots = [path.join(__dirname, 'src'), path.join(__dirname, 'node_modules')];

function findImports(unit) {
  for (const root of roots) {
    const full = path.resolve(root, unit);
    if (!full.startsWith(root + path.sep)) continue;
    if (fs.existsSync(full)) return { contents: fs.readFileSync(full, 'utf8') };
  }
  return { error: 'import not found in contracts/src or contracts/node_modules: ' + unit };
}

const input = fs.readFileSync(0, 'utf8');
const output = JSON.parse(solc.compile(input, { import: findImports }));
process.stdout.write(JSON.stringify({ version: solc.version(), output }));
