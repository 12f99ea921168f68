// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {MessageHashUtils} from "@openzeppelin/contracts/utils/cryptography/MessageHashUtils.sol";

/// @title EIP-712 with a salt chosen for each deployment
/// @notice OpenZeppelin's EIP712 with the domain's standard `salt` field: the domain is name, version, chain id,
/// address and a random value new for each deployment.
/// @dev A contract redeployed at the same address (same chain id, same deployer and nonce, after a chain reset)
/// must not accept the signatures made for the one before. OpenZeppelin's EIP712 has no salt; this keeps its
/// name, version and ERC-5267 report and extends the domain with the salt.
abstract contract SaltedEIP712 is EIP712 {
    bytes32 private constant DOMAIN_TYPEHASH =
        keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract,bytes32 salt)");

    /// @notice The random value of this deployment in the EIP-712 domain (its `salt` field).
    bytes32 public immutable domainSalt;
    bytes32 private immutable _nameHash;
    bytes32 private immutable _versionHash;
    uint256 private immutable _deployedChainId;
    bytes32 private immutable _deployedDomainSeparator;

    /// @param name the domain's name
    /// @param version the domain's version
    /// @param salt a random value, new for each deployment, that every signature commits to
    constructor(string memory name, string memory version, bytes32 salt) EIP712(name, version) {
        domainSalt = salt;
        bytes32 nameHash = keccak256(bytes(name));
        bytes32 versionHash = keccak256(bytes(version));
        _nameHash = nameHash;
        _versionHash = versionHash;
        _deployedChainId = block.chainid;
        _deployedDomainSeparator = _buildSaltedDomainSeparator(nameHash, versionHash, salt);
    }

    /// @notice The EIP-712 domain separator on this chain (name, version, chain id, address, salt).
    function domainSeparator() external view returns (bytes32) {
        return _saltedDomainSeparator();
    }

    /// @notice The EIP-712 domain (ERC-5267), salt included: fields 0x1f are name, version, chainId,
    /// verifyingContract and salt.
    function eip712Domain()
        public
        view
        override
        returns (
            bytes1 fields,
            string memory name,
            string memory version,
            uint256 chainId,
            address verifyingContract,
            bytes32 salt,
            uint256[] memory extensions
        )
    {
        return (hex"1f", _EIP712Name(), _EIP712Version(), block.chainid, address(this), domainSalt, new uint256[](0));
    }

    /// @dev Every digest the contract checks is in the salted domain.
    function _hashTypedDataV4(bytes32 structHash) internal view override returns (bytes32) {
        return MessageHashUtils.toTypedDataHash(_saltedDomainSeparator(), structHash);
    }

    /// @dev Cached, and rebuilt after a fork changes the chain id (as OpenZeppelin's EIP712 does).
    function _saltedDomainSeparator() private view returns (bytes32) {
        return block.chainid == _deployedChainId
            ? _deployedDomainSeparator
            : _buildSaltedDomainSeparator(_nameHash, _versionHash, domainSalt);
    }

    function _buildSaltedDomainSeparator(bytes32 nameHash, bytes32 versionHash, bytes32 salt)
        private
        view
        returns (bytes32)
    {
        return keccak256(abi.encode(DOMAIN_TYPEHASH, nameHash, versionHash, block.chainid, address(this), salt));
    }
}
