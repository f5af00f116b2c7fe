// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

/// @title ERC-6551 registry: deterministic token-bound account addresses.
/// @notice Each account is an ERC-1167 minimal proxy to `implementation` with
/// `abi.encode(salt, chainId, tokenContract, tokenId)` appended to its runtime code, deployed with
/// CREATE2 under `salt`, as the ERC lays out; so the address is known (and can receive tokens)
/// before the account is deployed, and anyone may deploy it.
contract ERC6551Registry {
    event ERC6551AccountCreated(
        address account,
        address indexed implementation,
        bytes32 salt,
        uint256 chainId,
        address indexed tokenContract,
        uint256 indexed tokenId
    );

    error AccountCreationFailed();

    /// @notice Deploys the account if it does not exist yet; returns its address either way.
    function createAccount(
        address implementation, bytes32 salt, uint256 chainId, address tokenContract, uint256 tokenId
    ) external returns (address) {
        bytes memory code = _creationCode(implementation, salt, chainId, tokenContract, tokenId);
        address predicted = _addressOf(code, salt);
        if (predicted.code.length != 0) return predicted;
        address deployed;
        assembly ("memory-safe") {
            deployed := create2(0, add(code, 0x20), mload(code), salt)
        }
        if (deployed == address(0)) revert AccountCreationFailed();
        emit ERC6551AccountCreated(deployed, implementation, salt, chainId, tokenContract, tokenId);
        return deployed;
    }

    function account(address implementation, bytes32 salt, uint256 chainId, address tokenContract, uint256 tokenId)
        external
        view
        returns (address)
    {
        return _addressOf(_creationCode(implementation, salt, chainId, tokenContract, tokenId), salt);
    }

    /// Init code (10 bytes) that returns the 173-byte runtime: the ERC-1167 proxy (45 bytes) and the
    /// 128-byte footer.
    function _creationCode(
        address implementation, bytes32 salt, uint256 chainId, address tokenContract, uint256 tokenId
    ) private pure returns (bytes memory) {
        return abi.encodePacked(
            hex"3d60ad80600a3d3981f3",
            hex"363d3d373d3d3d363d73",
            implementation,
            hex"5af43d82803e903d91602b57fd5bf3",
            abi.encode(salt, chainId, tokenContract, tokenId)
        );
    }

    function _addressOf(bytes memory code, bytes32 salt) private view returns (address) {
        return address(uint160(uint256(keccak256(abi.encodePacked(bytes1(0xff), address(this), salt, keccak256(code))))));
    }
}
