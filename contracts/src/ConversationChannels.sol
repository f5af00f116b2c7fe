// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {SignatureChecker} from "@openzeppelin/contracts/utils/cryptography/SignatureChecker.sol";
import {Multicall} from "@openzeppelin/contracts/utils/Multicall.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";
import {IDepositCollector} from "./IDepositCollector.sol";

/// @title Conversation channels: the x402 `batch-settlement` EVM scheme, written from its spec.
/// @notice One unidirectional channel per conversation. The payer (an agent's wallet) escrows
/// tokens; the gateway (receiver) is paid by cumulative EIP-712 vouchers the payer's authorizer
/// signs per call, claims them in batches, and sweeps claimed funds with `settle`. The rest goes
/// back by cooperative refund, or by the payer's timed withdrawal when the receiver does not
/// cooperate. The external ABI, the EIP-712 domain ("x402 Batch Settlement", "1") and the type
/// hashes are the scheme's, so x402's own clients and facilitators work against this contract.
///
/// Accounting: `balance` is what was deposited minus what went back to the payer; `totalClaimed`
/// is the receiver's cumulative entitlement within it. Tokens held = sum(balance - totalClaimed)
/// over channels + sum(totalClaimed - totalSettled) over receivers.
contract ConversationChannels is EIP712, Multicall, ReentrancyGuardTransient {
    using SafeERC20 for IERC20;

    struct ChannelConfig {
        address payer;
        address payerAuthorizer;
        address receiver;
        address receiverAuthorizer;
        address token;
        uint40 withdrawDelay;
        bytes32 salt;
    }

    struct ChannelState {
        uint128 balance;
        uint128 totalClaimed;
    }

    struct WithdrawalState {
        uint128 amount;
        uint40 initiatedAt;
    }

    struct ReceiverState {
        uint128 totalClaimed;
        uint128 totalSettled;
    }

    struct Voucher {
        ChannelConfig channel;
        uint128 maxClaimableAmount;
    }

    /// @dev `totalClaimed` is the new cumulative total, not a delta: a replayed row is a no-op.
    struct VoucherClaim {
        Voucher voucher;
        bytes signature;
        uint128 totalClaimed;
    }

    uint40 public constant MIN_WITHDRAW_DELAY = 15 minutes;
    uint40 public constant MAX_WITHDRAW_DELAY = 30 days;

    bytes32 public constant CHANNEL_CONFIG_TYPEHASH = keccak256(
        "ChannelConfig(address payer,address payerAuthorizer,address receiver,address receiverAuthorizer,address token,uint40 withdrawDelay,bytes32 salt)"
    );
    bytes32 public constant VOUCHER_TYPEHASH = keccak256("Voucher(bytes32 channelId,uint128 maxClaimableAmount)");
    bytes32 public constant REFUND_TYPEHASH = keccak256("Refund(bytes32 channelId,uint256 nonce,uint128 amount)");
    bytes32 public constant CLAIM_ENTRY_TYPEHASH =
        keccak256("ClaimEntry(bytes32 channelId,uint128 maxClaimableAmount,uint128 totalClaimed)");
    bytes32 public constant CLAIM_BATCH_TYPEHASH = keccak256(
        "ClaimBatch(ClaimEntry[] claims)ClaimEntry(bytes32 channelId,uint128 maxClaimableAmount,uint128 totalClaimed)"
    );

    mapping(bytes32 channelId => ChannelState) public channels;
    mapping(bytes32 channelId => uint256) public refundNonce;
    mapping(bytes32 channelId => WithdrawalState) public pendingWithdrawals;
    mapping(address receiver => mapping(address token => ReceiverState)) public receivers;

    event ChannelCreated(bytes32 indexed channelId, ChannelConfig config);
    event ChannelClosed(bytes32 indexed channelId, ChannelConfig config);
    event Deposited(bytes32 indexed channelId, address indexed sender, uint128 amount, uint128 newBalance);
    event Claimed(bytes32 indexed channelId, address indexed sender, uint128 claimAmount, uint128 newTotalClaimed);
    event Settled(address indexed receiver, address indexed token, address indexed sender, uint128 amount);
    event Refunded(bytes32 indexed channelId, address indexed sender, uint128 amount);
    event WithdrawInitiated(bytes32 indexed channelId, uint128 amount, uint40 finalizeAfter);
    event WithdrawFinalized(bytes32 indexed channelId, address indexed sender, uint128 amount);

    error InvalidChannel();
    error ZeroDeposit();
    error DepositOverflow();
    error InvalidSignature();
    error NotReceiverAuthorizer();
    error NotAuthorizedToClaim();
    error NotAuthorizedToRefund();
    error NotAuthorizedToInitiateWithdraw();
    error NotAuthorizedToFinalizeWithdraw();
    error ClaimExceedsCeiling();
    error ClaimExceedsBalance();
    error WithdrawalAlreadyPending();
    error WithdrawalNotPending();
    error WithdrawDelayNotElapsed();
    error NothingToWithdraw();
    error WithdrawAmountExceedsAvailable();
    error WithdrawDelayOutOfRange();
    error EmptyBatch();
    error DepositCollectionFailed();
    error InvalidCollector();
    error InvalidRefundNonce();
    error ZeroRefund();

    constructor() EIP712("x402 Batch Settlement", "1") {}

    // ----------------------------------------------------------------------------------- deposit

    /// @notice Escrows `amount` into the channel of `config`; `collector` pulls it from the payer
    /// (EIP-3009 authorization, or the payer's own call through a wallet collector). The contract's
    /// token balance must grow by exactly `amount`, whatever the collector or token claims.
    function deposit(ChannelConfig calldata config, uint128 amount, address collector, bytes calldata collectorData)
        external
        nonReentrant
    {
        _requireValidConfig(config);
        if (amount == 0) revert ZeroDeposit();
        if (collector == address(0)) revert InvalidCollector();
        bytes32 channelId = getChannelId(config);
        ChannelState storage ch = channels[channelId];
        uint128 before = ch.balance;
        if (amount > type(uint128).max - before) revert DepositOverflow();
        ch.balance = before + amount;

        IERC20 token = IERC20(config.token);
        uint256 held = token.balanceOf(address(this));
        IDepositCollector(collector).collect(config.payer, config.token, amount, channelId, collectorData);
        if (token.balanceOf(address(this)) != held + amount) revert DepositCollectionFailed();

        if (before == 0 && ch.totalClaimed == 0) emit ChannelCreated(channelId, config);
        emit Deposited(channelId, msg.sender, amount, ch.balance);
    }

    // ------------------------------------------------------------------------- claim and settle

    /// @notice Applies vouchers to their channels; the caller is each row's receiver side.
    function claim(VoucherClaim[] calldata voucherClaims) external nonReentrant {
        uint256 n = voucherClaims.length;
        if (n == 0) revert EmptyBatch();
        for (uint256 i = 0; i < n; ++i) {
            ChannelConfig calldata c = voucherClaims[i].voucher.channel;
            if (msg.sender != c.receiver && msg.sender != c.receiverAuthorizer) revert NotAuthorizedToClaim();
            _applyClaim(voucherClaims[i]);
        }
    }

    /// @notice Applies vouchers authorised by one `receiverAuthorizer` signature over the batch
    /// (EIP-712 `ClaimBatch`); anyone may relay it.
    function claimWithSignature(VoucherClaim[] calldata voucherClaims, bytes calldata authorizerSignature)
        external
        nonReentrant
    {
        uint256 n = voucherClaims.length;
        if (n == 0) revert EmptyBatch();
        address authorizer = voucherClaims[0].voucher.channel.receiverAuthorizer;
        if (!SignatureChecker.isValidSignatureNowCalldata(authorizer, getClaimBatchDigest(voucherClaims), authorizerSignature))
        {
            revert InvalidSignature();
        }
        for (uint256 i = 0; i < n; ++i) {
            if (voucherClaims[i].voucher.channel.receiverAuthorizer != authorizer) revert NotReceiverAuthorizer();
            _applyClaim(voucherClaims[i]);
        }
    }

    /// @notice Pays `receiver` everything claimed for it in `token` and not yet paid. Permissionless.
    function settle(address receiver, address token) external nonReentrant {
        ReceiverState storage r = receivers[receiver][token];
        uint128 due = r.totalClaimed - r.totalSettled;
        if (due == 0) return;
        r.totalSettled = r.totalClaimed;
        emit Settled(receiver, token, msg.sender, due);
        IERC20(token).safeTransfer(receiver, due);
    }

    // ----------------------------------------------------------------------- payer's withdrawal

    /// @notice Starts the payer's escape hatch: `amount` of the unclaimed escrow leaves after the
    /// channel's withdraw delay, unless the receiver claims it first.
    function initiateWithdraw(ChannelConfig calldata config, uint128 amount) external nonReentrant {
        if (msg.sender != config.payer && msg.sender != config.payerAuthorizer) {
            revert NotAuthorizedToInitiateWithdraw();
        }
        if (amount == 0) revert NothingToWithdraw();
        bytes32 channelId = getChannelId(config);
        WithdrawalState storage w = pendingWithdrawals[channelId];
        if (w.initiatedAt != 0) revert WithdrawalAlreadyPending();
        if (amount > _unclaimed(channels[channelId])) revert WithdrawAmountExceedsAvailable();
        w.amount = amount;
        w.initiatedAt = uint40(block.timestamp);
        emit WithdrawInitiated(channelId, amount, uint40(block.timestamp) + config.withdrawDelay);
    }

    /// @notice Completes a pending withdrawal once its delay passed, capped to what is still unclaimed.
    function finalizeWithdraw(ChannelConfig calldata config) external nonReentrant {
        if (msg.sender != config.payer && msg.sender != config.payerAuthorizer) {
            revert NotAuthorizedToFinalizeWithdraw();
        }
        bytes32 channelId = getChannelId(config);
        WithdrawalState storage w = pendingWithdrawals[channelId];
        uint256 started = w.initiatedAt;
        if (started == 0) revert WithdrawalNotPending();
        if (block.timestamp < started + config.withdrawDelay) revert WithdrawDelayNotElapsed();
        ChannelState storage ch = channels[channelId];
        uint128 free = _unclaimed(ch);
        uint128 out = w.amount < free ? w.amount : free;
        delete pendingWithdrawals[channelId];
        ch.balance -= out;
        emit WithdrawFinalized(channelId, msg.sender, out);
        if (ch.balance == 0 && ch.totalClaimed == 0) emit ChannelClosed(channelId, config);
        if (out != 0) IERC20(config.token).safeTransfer(config.payer, out);
    }

    // --------------------------------------------------------------------------------- refunds

    /// @notice Cooperative refund by the receiver side, capped to the unclaimed escrow.
    function refund(ChannelConfig calldata config, uint128 amount) external nonReentrant {
        if (msg.sender != config.receiver && msg.sender != config.receiverAuthorizer) revert NotAuthorizedToRefund();
        _refund(config, amount);
    }

    /// @notice Cooperative refund relayed by anyone with the receiver authorizer's EIP-712 `Refund`
    /// signature for the channel's current refund nonce.
    function refundWithSignature(
        ChannelConfig calldata config,
        uint128 amount,
        uint256 nonce,
        bytes calldata receiverAuthorizerSignature
    ) external nonReentrant {
        bytes32 channelId = getChannelId(config);
        if (nonce != refundNonce[channelId]) revert InvalidRefundNonce();
        bytes32 digest = getRefundDigest(channelId, nonce, amount);
        if (!SignatureChecker.isValidSignatureNowCalldata(config.receiverAuthorizer, digest, receiverAuthorizerSignature))
        {
            revert InvalidSignature();
        }
        _refund(config, amount);
    }

    // ----------------------------------------------------------------------------------- views

    /// @notice The channel id: the EIP-712 hash of `config` under this deployment's domain, so the
    /// same config names different channels on other chains or deployments.
    function getChannelId(ChannelConfig calldata config) public view returns (bytes32) {
        return _hashTypedDataV4(keccak256(abi.encode(CHANNEL_CONFIG_TYPEHASH, config)));
    }

    function getVoucherDigest(bytes32 channelId, uint128 maxClaimableAmount) public view returns (bytes32) {
        return _hashTypedDataV4(keccak256(abi.encode(VOUCHER_TYPEHASH, channelId, maxClaimableAmount)));
    }

    function getRefundDigest(bytes32 channelId, uint256 nonce, uint128 amount) public view returns (bytes32) {
        return _hashTypedDataV4(keccak256(abi.encode(REFUND_TYPEHASH, channelId, nonce, amount)));
    }

    /// @notice EIP-712 `ClaimBatch` digest: an array of structs hashes as keccak of its entries' hashes.
    function getClaimBatchDigest(VoucherClaim[] calldata voucherClaims) public view returns (bytes32) {
        uint256 n = voucherClaims.length;
        bytes memory entries = new bytes(32 * n);
        for (uint256 i = 0; i < n; ++i) {
            VoucherClaim calldata vc = voucherClaims[i];
            bytes32 entry = keccak256(
                abi.encode(
                    CLAIM_ENTRY_TYPEHASH, getChannelId(vc.voucher.channel), vc.voucher.maxClaimableAmount, vc.totalClaimed
                )
            );
            assembly ("memory-safe") {
                mstore(add(add(entries, 32), mul(i, 32)), entry)
            }
        }
        return _hashTypedDataV4(keccak256(abi.encode(CLAIM_BATCH_TYPEHASH, keccak256(entries))));
    }

    // -------------------------------------------------------------------------------- internal

    function _requireValidConfig(ChannelConfig calldata c) private pure {
        if (c.payer == address(0) || c.receiver == address(0) || c.receiverAuthorizer == address(0)) {
            revert InvalidChannel();
        }
        if (c.token == address(0)) revert InvalidChannel();
        if (c.withdrawDelay < MIN_WITHDRAW_DELAY || c.withdrawDelay > MAX_WITHDRAW_DELAY) {
            revert WithdrawDelayOutOfRange();
        }
    }

    function _unclaimed(ChannelState storage ch) private view returns (uint128) {
        return ch.balance - ch.totalClaimed;
    }

    /// @dev A row at or below what is claimed already changes nothing (stale or replayed voucher).
    /// Otherwise the new total must be within the voucher's ceiling and the channel's balance, and
    /// the voucher signed by the payer authorizer (ECDSA, low-s only) or, when that is zero, by the
    /// payer (ECDSA or ERC-1271).
    function _applyClaim(VoucherClaim calldata vc) private {
        ChannelConfig calldata c = vc.voucher.channel;
        bytes32 channelId = getChannelId(c);
        ChannelState storage ch = channels[channelId];
        uint128 claimed = ch.totalClaimed;
        uint128 total = vc.totalClaimed;
        if (total <= claimed) return;
        if (total > vc.voucher.maxClaimableAmount) revert ClaimExceedsCeiling();
        if (total > ch.balance) revert ClaimExceedsBalance();
        bytes32 digest = getVoucherDigest(channelId, vc.voucher.maxClaimableAmount);
        if (c.payerAuthorizer != address(0)) {
            (address signer, ECDSA.RecoverError failure,) = ECDSA.tryRecoverCalldata(digest, vc.signature);
            if (failure != ECDSA.RecoverError.NoError || signer != c.payerAuthorizer) revert InvalidSignature();
        } else if (!SignatureChecker.isValidSignatureNowCalldata(c.payer, digest, vc.signature)) {
            revert InvalidSignature();
        }
        uint128 delta = total - claimed;
        ch.totalClaimed = total;
        receivers[c.receiver][c.token].totalClaimed += delta;
        emit Claimed(channelId, msg.sender, delta, total);
    }

    /// @dev The nonce advances first, even when nothing is left to refund, so a direct refund
    /// voids any signed refund for the previous nonce. A pending withdrawal shrinks by the refund.
    function _refund(ChannelConfig calldata config, uint128 amount) private {
        if (amount == 0) revert ZeroRefund();
        bytes32 channelId = getChannelId(config);
        unchecked {
            ++refundNonce[channelId];
        }
        ChannelState storage ch = channels[channelId];
        uint128 free = _unclaimed(ch);
        uint128 out = amount < free ? amount : free;
        if (out == 0) return;
        ch.balance -= out;
        WithdrawalState storage w = pendingWithdrawals[channelId];
        if (w.initiatedAt != 0) {
            if (out >= w.amount) delete pendingWithdrawals[channelId];
            else w.amount -= out;
        }
        emit Refunded(channelId, msg.sender, out);
        if (ch.balance == 0 && ch.totalClaimed == 0) emit ChannelClosed(channelId, config);
        IERC20(config.token).safeTransfer(config.payer, out);
    }
}
