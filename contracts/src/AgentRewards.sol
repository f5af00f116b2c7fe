// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {IERC721} from "@openzeppelin/contracts/token/ERC721/IERC721.sol";
import {ERC6551Registry} from "./ERC6551Registry.sol";

/// @title Rewards: a facilitator pays several agents' wallets in one transaction.
/// @notice Every leg goes from the caller (the facilitator, who approved this contract) to an
/// agent's ERC-6551 account, computed from the agent id, so the wallet need not be deployed yet.
/// All legs or none: any failing leg (unknown agent, zero amount, short balance or allowance)
/// reverts the whole distribution. A distribution id is accepted once per facilitator, so a retried
/// transaction never pays twice. Events cite the conversation for receipts.
contract AgentRewards {
    using SafeERC20 for IERC20;

    ERC6551Registry public immutable accountRegistry;
    address public immutable accountImplementation;
    bytes32 public immutable accountSalt;
    IERC721 public immutable identity;

    mapping(address facilitator => mapping(bytes32 distributionId => bool)) public distributed;

    event RewardPaid(
        bytes32 indexed conversationId, uint256 indexed agentId, address indexed wallet, uint256 amount
    );
    event RewardsDistributed(
        bytes32 indexed conversationId,
        bytes32 indexed distributionId,
        address indexed facilitator,
        address token,
        uint256 total,
        uint256 legs
    );

    error EmptyDistribution();
    error LengthMismatch(uint256 agents, uint256 amounts);
    error ZeroAmount(uint256 leg);
    error AlreadyDistributed(address facilitator, bytes32 distributionId);

    constructor(ERC6551Registry registry_, address implementation_, bytes32 salt_, IERC721 identity_) {
        accountRegistry = registry_;
        accountImplementation = implementation_;
        accountSalt = salt_;
        identity = identity_;
    }

    /// @notice The agent's wallet: its ERC-6551 account under this contract's implementation and salt.
    function walletOf(uint256 agentId) public view returns (address) {
        return accountRegistry.account(accountImplementation, accountSalt, block.chainid, address(identity), agentId);
    }

    function distribute(
        IERC20 token,
        bytes32 conversationId,
        bytes32 distributionId,
        uint256[] calldata agentIds,
        uint256[] calldata amounts
    ) external returns (uint256 total) {
        if (agentIds.length == 0) revert EmptyDistribution();
        if (agentIds.length != amounts.length) revert LengthMismatch(agentIds.length, amounts.length);
        if (distributed[msg.sender][distributionId]) revert AlreadyDistributed(msg.sender, distributionId);
        distributed[msg.sender][distributionId] = true;
        for (uint256 i = 0; i < agentIds.length; ++i) {
            if (amounts[i] == 0) revert ZeroAmount(i);
            identity.ownerOf(agentIds[i]); // reverts for an agent that does not exist
            address wallet = walletOf(agentIds[i]);
            token.safeTransferFrom(msg.sender, wallet, amounts[i]);
            total += amounts[i];
            emit RewardPaid(conversationId, agentIds[i], wallet, amounts[i]);
        }
        emit RewardsDistributed(conversationId, distributionId, msg.sender, address(token), total, agentIds.length);
    }
}
