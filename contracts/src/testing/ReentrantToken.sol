// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";

/// @title TEST ONLY: a hostile ERC-20 that calls back into a target during its transfers.
/// @notice Used by teegate's contract tests to show the channel contract refuses re-entry. Its
/// `receiveWithAuthorization` checks no signature at all (anyone's tokens move): never deploy it
/// anywhere with value. When armed, every transfer first calls `target` with `payload` and bubbles
/// a revert up, so the test sees the guard's error; `lenient` swallows it instead and records it.
contract ReentrantToken is ERC20 {
    address public target;
    bytes public payload;
    bool public lenient;
    bool public reentered;
    bytes public lastRevert;
    bool private busy;

    constructor() ERC20("Reentrant", "RE") {}

    function mint(address to, uint256 value) external {
        _mint(to, value);
    }

    function arm(address target_, bytes calldata payload_, bool lenient_) external {
        target = target_;
        payload = payload_;
        lenient = lenient_;
    }

    function receiveWithAuthorization(
        address from, address to, uint256 value, uint256, uint256, bytes32, bytes calldata
    ) external {
        _transfer(from, to, value);
    }

    function _update(address from, address to, uint256 value) internal override {
        if (target != address(0) && !busy) {
            busy = true;
            (bool ok, bytes memory ret) = target.call(payload);
            busy = false;
            reentered = ok;
            if (!ok) {
                lastRevert = ret;
                if (!lenient) {
                    assembly ("memory-safe") {
                        revert(add(ret, 32), mload(ret))
                    }
                }
            }
        }
        super._update(from, to, value);
    }
}
