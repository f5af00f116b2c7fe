// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {IDepositCollector} from "./IDepositCollector.sol";

/// @dev EIP-3009's `receiveWithAuthorization` in the bytes-signature form (USDC, DevToken).
interface IReceiveWithAuthorization {
    function receiveWithAuthorization(
        address from,
        address to,
        uint256 value,
        uint256 validAfter,
        uint256 validBefore,
        bytes32 nonce,
        bytes calldata signature
    ) external;
}

/// @title Deposits into conversation channels by an EIP-3009 authorization (x402 `eip3009` method).
/// @notice The payer signs `ReceiveWithAuthorization(from: payer, to: this collector, value,
/// validAfter, validBefore, nonce)` with `nonce = keccak256(abi.encode(channelId, salt))`, so the
/// authorization can fund only that channel. EIP-3009 lets only the payee pull, hence the hop
/// through this contract. ERC-1271 signatures work where the token supports them (an agent's
/// ERC-6551 wallet signing with its authorised key). Only the channel contract may call `collect`:
/// anyone else would be handed the payer's tokens.
/// `collectorData = abi.encode(uint256 validAfter, uint256 validBefore, uint256 salt, bytes signature)`.
contract ERC3009DepositCollector is IDepositCollector {
    using SafeERC20 for IERC20;

    address public immutable channels;

    error OnlyChannels(address caller);
    error ZeroChannels();

    constructor(address channels_) {
        if (channels_ == address(0)) revert ZeroChannels();
        channels = channels_;
    }

    function collect(address payer, address token, uint256 amount, bytes32 channelId, bytes calldata collectorData)
        external
    {
        if (msg.sender != channels) revert OnlyChannels(msg.sender);
        (uint256 validAfter, uint256 validBefore, uint256 salt, bytes memory signature) =
            abi.decode(collectorData, (uint256, uint256, uint256, bytes));
        bytes32 nonce = keccak256(abi.encode(channelId, salt));
        IReceiveWithAuthorization(token).receiveWithAuthorization(
            payer, address(this), amount, validAfter, validBefore, nonce, signature
        );
        IERC20(token).safeTransfer(channels, amount);
    }
}
