// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

/// @title The x402 batch-settlement deposit collector interface.
/// @notice `ConversationChannels.deposit` calls `collect`; the collector must move exactly `amount`
/// of `token` from `payer` to its caller. The channel contract checks its balance afterwards.
interface IDepositCollector {
    function collect(address payer, address token, uint256 amount, bytes32 channelId, bytes calldata collectorData)
        external;
}
