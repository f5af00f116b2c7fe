// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {ConversationChannels} from "./ConversationChannels.sol";
import {IDepositCollector} from "./IDepositCollector.sol";

/// @title Deposits made by the payer's own call (an agent's wallet executing from its owner).
/// @notice The payer approves this collector and calls `depositFrom`; the collector arms a
/// one-shot permission in transient storage and asks the channel contract to deposit, which calls
/// `collect` back. A plain allowance pull without that permission would let anyone open a channel
/// in the payer's name with themselves as receiver, so `collect` refuses anything not armed by the
/// payer in the same call.
contract WalletDepositCollector is IDepositCollector {
    using SafeERC20 for IERC20;

    ConversationChannels public immutable channels;

    bytes32 private transient armed;

    error OnlyChannels(address caller);
    error NotPayer(address caller, address payer);
    error NotArmed(bytes32 channelId);
    error ZeroChannels();

    constructor(ConversationChannels channels_) {
        if (address(channels_) == address(0)) revert ZeroChannels();
        channels = channels_;
    }

    /// @notice Moves `amount` of the caller's tokens into the channel of `config` (caller = payer).
    function depositFrom(ConversationChannels.ChannelConfig calldata config, uint128 amount) external {
        if (msg.sender != config.payer) revert NotPayer(msg.sender, config.payer);
        armed = _permission(config.payer, config.token, amount, channels.getChannelId(config));
        channels.deposit(config, amount, address(this), "");
        armed = bytes32(0);
    }

    function collect(address payer, address token, uint256 amount, bytes32 channelId, bytes calldata)
        external
    {
        if (msg.sender != address(channels)) revert OnlyChannels(msg.sender);
        if (armed == bytes32(0) || armed != _permission(payer, token, amount, channelId)) revert NotArmed(channelId);
        armed = bytes32(0);
        IERC20(token).safeTransferFrom(payer, msg.sender, amount);
    }

    function _permission(address payer, address token, uint256 amount, bytes32 channelId)
        private
        pure
        returns (bytes32)
    {
        return keccak256(abi.encode(payer, token, amount, channelId));
    }
}
