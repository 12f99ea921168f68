// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

/// @title Test only: a contract account that holds a consortium role, as a multisig wallet (a Safe) would
/// @notice Its owners make it call a target; a real deployment uses an audited multisig instead (docs/ledger.md).
contract ForwardingWallet {
    mapping(address owner => bool) public isOwner;

    error NotOwner(address caller);

    constructor(address[] memory owners) {
        for (uint256 i = 0; i < owners.length; ++i) {
            isOwner[owners[i]] = true;
        }
    }

    /// @notice Call `target` with `data` as this wallet; a revert of the target is passed on as it is.
    function execute(address target, bytes calldata data) external returns (bytes memory) {
        if (!isOwner[msg.sender]) revert NotOwner(msg.sender);
        (bool ok, bytes memory result) = target.call(data);
        if (!ok) {
            assembly ("memory-safe") {
                revert(add(result, 32), mload(result))
            }
        }
        return result;
    }
}
