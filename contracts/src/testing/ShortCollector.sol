// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {IDepositCollector} from "../IDepositCollector.sol";

/// @title TEST ONLY: a deposit collector that delivers one unit less than asked (a fee-on-transfer
/// token or a buggy collector), from its own balance.
contract ShortCollector is IDepositCollector {
    function collect(address, address token, uint256 amount, bytes32, bytes calldata) external {
        require(IERC20(token).transfer(msg.sender, amount - 1));
    }
}
