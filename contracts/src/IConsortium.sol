// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

/// @title What the consent registry asks of the consortium
interface IConsortium {
    /// @notice Whether `account` is a registered hospital that is not suspended.
    function isActiveHospital(address account) external view returns (bool);
}
