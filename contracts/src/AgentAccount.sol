// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import {IERC165} from "@openzeppelin/contracts/utils/introspection/IERC165.sol";
import {IERC1271} from "@openzeppelin/contracts/interfaces/IERC1271.sol";
import {IERC721} from "@openzeppelin/contracts/token/ERC721/IERC721.sol";
import {IERC721Receiver} from "@openzeppelin/contracts/token/ERC721/IERC721Receiver.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {SignatureChecker} from "@openzeppelin/contracts/utils/cryptography/SignatureChecker.sol";

/// The ERC-6551 account interface (its ERC-165 id is 0x6faff5f1).
interface IERC6551Account {
    receive() external payable;

    function token() external view returns (uint256 chainId, address tokenContract, uint256 tokenId);

    function state() external view returns (uint256);

    function isValidSigner(address signer, bytes calldata context) external view returns (bytes4 magicValue);
}

/// The ERC-6551 execution interface (its ERC-165 id is 0x51945447).
interface IERC6551Executable {
    function execute(address to, uint256 value, bytes calldata data, uint8 operation)
        external
        payable
        returns (bytes memory);
}

/// @title An agent's wallet: the ERC-6551 account implementation behind every agent NFT's proxy.
/// @notice Whoever owns the NFT controls the account: it executes calls, and its signatures are the
/// account's (ERC-1271), so transferring the NFT transfers the wallet and everything in it. The
/// owner may also authorise signer keys (e.g. a key held in the agent's TEE) whose ECDSA signatures
/// the account accepts; they are recorded per owner, so a new owner starts with none. Signer keys
/// sign, they never execute. Only plain calls (operation 0) are executed.
contract AgentAccount is IERC165, IERC1271, IERC6551Account, IERC6551Executable, IERC721Receiver {
    bytes4 private constant VALID_SIGNER = IERC6551Account.isValidSigner.selector;
    bytes4 private constant INVALID_SIGNATURE = 0xffffffff;
    /// The proxy's runtime: 45 bytes of ERC-1167 and the 128-byte footer the registry appends.
    uint256 private constant PROXY_CODE_SIZE = 0xad;

    uint256 private _state;
    mapping(address owner => mapping(address signer => bool)) private _signers;

    event SignerSet(address indexed owner, address indexed signer, bool allowed);

    error NotOwner(address caller);
    error UnsupportedOperation(uint8 operation);
    error OwnershipCycle();

    receive() external payable {}

    /// @notice The NFT this account belongs to, read from the proxy's code footer. The
    /// implementation itself (not behind a proxy) belongs to no token and has no owner.
    function token() public view returns (uint256 chainId, address tokenContract, uint256 tokenId) {
        if (address(this).code.length != PROXY_CODE_SIZE) return (0, address(0), 0);
        bytes memory footer = new bytes(0x60);
        assembly ("memory-safe") {
            extcodecopy(address(), add(footer, 0x20), 0x4d, 0x60) // skip the proxy and the salt
        }
        return abi.decode(footer, (uint256, address, uint256));
    }

    /// @notice The current owner of the NFT, or zero when the NFT is on another chain or gone.
    function owner() public view returns (address) {
        (uint256 chainId, address tokenContract, uint256 tokenId) = token();
        if (chainId != block.chainid || tokenContract.code.length == 0) return address(0);
        try IERC721(tokenContract).ownerOf(tokenId) returns (address holder) {
            return holder;
        } catch {
            return address(0);
        }
    }

    function state() external view returns (uint256) {
        return _state;
    }

    function isValidSigner(address signer, bytes calldata) external view returns (bytes4) {
        address holder = owner();
        return holder != address(0) && signer == holder ? VALID_SIGNER : bytes4(0);
    }

    /// @notice ERC-1271: a signature of `hash` by the owner (ECDSA, or the owner's own ERC-1271), or
    /// an ECDSA signature by a signer key the current owner authorised. High-s twins are refused.
    function isValidSignature(bytes32 hash, bytes memory signature) external view returns (bytes4) {
        address holder = owner();
        if (holder == address(0)) return INVALID_SIGNATURE;
        if (SignatureChecker.isValidSignatureNow(holder, hash, signature)) return IERC1271.isValidSignature.selector;
        (address signer, ECDSA.RecoverError err,) = ECDSA.tryRecover(hash, signature);
        if (err == ECDSA.RecoverError.NoError && _signers[holder][signer]) {
            return IERC1271.isValidSignature.selector;
        }
        return INVALID_SIGNATURE;
    }

    /// @notice Authorises (or revokes) `signer` for signatures while the caller owns the NFT.
    function setSigner(address signer, bool allowed) external {
        address holder = _requireOwner();
        ++_state;
        _signers[holder][signer] = allowed;
        emit SignerSet(holder, signer, allowed);
    }

    function isSigner(address signer) external view returns (bool) {
        return _signers[owner()][signer];
    }

    function execute(address to, uint256 value, bytes calldata data, uint8 operation)
        external
        payable
        returns (bytes memory result)
    {
        _requireOwner();
        if (operation != 0) revert UnsupportedOperation(operation);
        ++_state;
        bool ok;
        (ok, result) = to.call{value: value}(data);
        if (!ok) {
            assembly ("memory-safe") {
                revert(add(result, 0x20), mload(result))
            }
        }
    }

    function supportsInterface(bytes4 interfaceId) external pure returns (bool) {
        return interfaceId == type(IERC165).interfaceId || interfaceId == type(IERC6551Account).interfaceId
            || interfaceId == type(IERC6551Executable).interfaceId || interfaceId == type(IERC1271).interfaceId
            || interfaceId == type(IERC721Receiver).interfaceId;
    }

    /// @notice Accepts NFTs, except its own: an account owning its own NFT would be locked forever.
    function onERC721Received(address, address, uint256 tokenId, bytes calldata) external view returns (bytes4) {
        (uint256 chainId, address tokenContract, uint256 ownTokenId) = token();
        if (chainId == block.chainid && msg.sender == tokenContract && tokenId == ownTokenId) {
            revert OwnershipCycle();
        }
        return IERC721Receiver.onERC721Received.selector;
    }

    function _requireOwner() private view returns (address holder) {
        holder = owner();
        if (holder == address(0) || msg.sender != holder) revert NotOwner(msg.sender);
    }
}
