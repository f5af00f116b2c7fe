"""teegate's on-chain side: the contracts' compiled artifacts and, later, the chain edge.

The Solidity sources live in ``contracts/src`` of the repository; ``teegate.chain.build`` compiles
them with the pinned solc-js into ``teegate/chain/artifacts``, which ship with the package so that
nothing at run time needs a compiler.
"""

from __future__ import annotations

from teegate.chain.artifacts import Artifact, load_artifact

__all__ = ["Artifact", "load_artifact"]
