// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

/// @title The TwinLedger consortium: hospitals and their nodes, studies and their app, round anchors
/// @notice Errors and events are declared here, next to the functions that raise and emit them, so that a
/// caller (the consent registry, the Python client) has one place to read them.
interface IConsortium {
    // ---- errors ----

    error HospitalAlreadyRegistered(address account);
    error UnknownHospital(address account);
    error HospitalSuspended(address account);
    /// @dev A node key must be a 65-byte uncompressed P-256 point (0x04 || X || Y).
    error InvalidNodeKey();
    /// @dev The key whose fingerprint is `nodeId` is already another hospital's node key.
    error NodeKeyInUse(bytes32 nodeId);
    /// @dev No hospital holds the node key whose fingerprint is `nodeId`.
    error UnknownNodeKey(bytes32 nodeId);
    error StudyAlreadyExists(bytes32 studyId);
    error UnknownStudy(bytes32 studyId);
    error StudyNotLive(bytes32 studyId);
    error InvalidStudyTerms();
    /// @dev A hospital accepted the study: its app can no longer change (new code needs a new study).
    error StudyAppLocked(bytes32 studyId);
    error RoundAlreadyAnchored(bytes32 studyId, uint32 round);
    error RoundOutOfRange(bytes32 studyId, uint32 round);
    error PinnedBlockInFuture(uint64 pinnedBlock);
    error CommitmentLengthMismatch();
    /// @dev A hospital's recorded privacy spending only grows: `offered` is below the `recorded` epsilon.
    error SpendingDecreased(bytes32 studyId, address hospital, uint64 recorded, uint64 offered);
    /// @dev `account` is the only holder of DEFAULT_ADMIN_ROLE: revoking or renouncing it would leave nobody able
    /// to grant or revoke a role (operator, coordinator) ever again. Grant the role to another account first.
    error LastAdmin(address account);
    /// @dev `signer` is zero or already acts for a hospital (its current signer or registration address).
    error SignerInUse(address signer);

    // ---- events ----

    event HospitalRegistered(address indexed account, bytes32 indexed nodeId);
    event HospitalSuspensionChanged(address indexed account, bool suspended);
    /// @notice Hospital `account` now acts through `newSigner`; `previousSigner` can no longer act for it.
    event HospitalKeyRotated(address indexed account, address indexed previousSigner, address indexed newSigner);
    /// @notice `account` names `nodeKey` (fingerprint `nodeId`) as its SuperNode's authentication key.
    event NodeKeySet(address indexed account, bytes32 indexed nodeId, bytes nodeKey);
    event StudyProposed(
        bytes32 indexed studyId, bytes32 indexed purpose, bytes32 taskId, uint64 epsilonBudgetMilli, uint32 rounds, uint64 endsAt
    );
    /// @notice The study runs the app whose FAB has the SHA-256 digest `appDigest` (Flower's `fab_hash`).
    event StudyAppSet(bytes32 indexed studyId, bytes32 appDigest);
    event StudyEvaluationShareSet(bytes32 indexed studyId, uint8 percent);
    event StudySuspensionChanged(bytes32 indexed studyId, bool suspended);
    event StudyAccepted(bytes32 indexed studyId, address indexed hospital);
    event RoundAnchored(
        bytes32 indexed studyId,
        uint32 indexed round,
        uint64 pinnedBlock,
        bytes32 modelHash,
        address[] hospitals,
        bytes32[] commitments
    );

    /// @notice `hospital` has spent `epsilonSpentMicro` / 1e6 of its epsilon budget for `studyId` (its node's own
    /// privacy account, after a round).
    event SpendingRecorded(bytes32 indexed studyId, address indexed hospital, uint64 epsilonSpentMicro);

    // ---- roles ----
    // AccessControl's roles: DEFAULT_ADMIN_ROLE grants and revokes every role (itself included), OPERATOR_ROLE
    // registers and suspends hospitals and proposes and suspends studies, COORDINATOR_ROLE anchors rounds. Any
    // address may hold a role, a contract account (a multisig wallet) as well as a key's.

    /// @notice How many accounts hold DEFAULT_ADMIN_ROLE; never zero (revoking or renouncing the last admin
    /// reverts {LastAdmin}).
    function adminCount() external view returns (uint256);

    // ---- hospitals and their nodes ----

    /// @notice Register a hospital's account.
    /// @dev Requires the operator role and an account neither registered yet nor another hospital's signer
    /// ({SignerInUse}). The account stays the hospital's identity; it is also its first signer ({rotateHospitalKey}).
    /// Emits {HospitalRegistered}.
    /// @param nodeId an opaque placeholder kept for callers of the first version; the node's authenticated
    /// identity is the key the hospital itself records with {setNodeKey}.
    function registerHospital(address account, bytes32 nodeId) external;

    /// @notice Replace the calling hospital's signer (its chain key) by `newSigner`: from this block on only
    /// `newSigner` acts for the hospital, whose identity (its registration address: acceptances, enrolments,
    /// spending, anchors, node key) does not change.
    /// @dev Requires the caller to be a hospital's current signer (a suspended hospital too: rotating away from a
    /// leaked key only helps) and `newSigner` non-zero and acting for no hospital ({SignerInUse}).
    /// Emits {HospitalKeyRotated}.
    function rotateHospitalKey(address newSigner) external;

    /// @notice The operator's replacement of a hospital's signer, for a hospital that lost its key.
    /// @dev Requires the operator role, a registered `account` and `newSigner` as in {rotateHospitalKey}.
    /// Emits {HospitalKeyRotated}.
    function setHospitalSigner(address account, address newSigner) external;

    /// @notice The hospital (registration address) `signer` currently acts for; zero when none.
    /// @dev Every hospital call resolves `msg.sender` through this; so do the consent registry's hospital checks.
    function hospitalOf(address signer) external view returns (address);

    /// @notice Suspend or reinstate a hospital; a suspended hospital can neither accept studies nor train, and
    /// the operator's admission syncer shuts its node out of the federation.
    /// @dev Requires the operator role and a registered account. Emits {HospitalSuspensionChanged}.
    function setHospitalSuspended(address account, bool suspended) external;

    /// @notice Record the calling hospital's SuperNode authentication key; calling again rotates it.
    /// @dev Requires the caller to be a registered hospital's signer, not suspended (the hospital's own chain key
    /// vouches for its node: the operator cannot put a node of its own in its place), `nodeKey` a 65-byte
    /// uncompressed P-256 point, and that key not held by another hospital. The node id is derived here as
    /// sha256(DER SubjectPublicKeyInfo) of the key, the fingerprint of the PEM Flower reports for the node,
    /// so nobody can record a key with a mismatched id. Emits {NodeKeySet}.
    function setNodeKey(bytes calldata nodeKey) external;

    /// @notice The hospital whose node key has the fingerprint `nodeId`.
    /// @dev Reverts with {UnknownNodeKey} when no hospital holds that key (a suspended hospital still does).
    function hospitalByNodeId(bytes32 nodeId) external view returns (address);

    /// @notice Whether `account` is a registered hospital that is not suspended.
    function isActiveHospital(address account) external view returns (bool);

    // ---- studies ----

    /// @notice Propose a study: the data-use agreement hospitals accept one by one.
    /// @dev Requires the operator role, a new `studyId` and valid terms (budget, rounds, delta, a future end).
    /// Emits {StudyProposed}.
    function proposeStudy(
        bytes32 studyId,
        bytes32 purpose,
        bytes32 taskId,
        bytes32 dataCategories,
        uint64 epsilonBudgetMilli,
        uint64 deltaExponent,
        uint32 rounds,
        uint64 endsAt
    ) external;

    /// @notice Record the app a study runs: the SHA-256 digest of its FAB (Flower's `fab_hash`).
    /// @dev Requires the operator role, a known study, a non-zero digest and no acceptance yet: a hospital
    /// accepts the terms and the code together. Emits {StudyAppSet}.
    function setStudyApp(bytes32 studyId, bytes32 appDigest) external;

    /// @notice Set the percent of a study's epsilon budget that its evaluation releases may spend together
    /// (a study starts with DEFAULT_EVALUATION_SHARE_PERCENT).
    /// @dev Requires the operator role, a known study, 1 <= percent <= 99 and no acceptance yet (reverts
    /// {StudyAppLocked} after: a hospital accepts the split of its budget with the terms). Emits
    /// {StudyEvaluationShareSet}.
    function setStudyEvaluationShare(bytes32 studyId, uint8 percent) external;

    /// @notice Suspend or resume a study for every hospital.
    /// @dev Requires the operator role and a known study. Emits {StudySuspensionChanged}.
    function setStudySuspended(bytes32 studyId, bool suspended) external;

    /// @notice Accept a study (its terms and its app) on behalf of the calling hospital.
    /// @dev Requires the caller to be an unsuspended hospital's current signer and a live study. Emits {StudyAccepted}.
    function acceptStudy(bytes32 studyId) external;

    /// @notice Whether the hospital `account` may use patient data for `studyId` now (at the block of the call).
    function isStudyLiveFor(bytes32 studyId, address account) external view returns (bool);

    /// @notice Whether the hospital `account` accepted `studyId`.
    function hasAccepted(bytes32 studyId, address account) external view returns (bool);

    // ---- round anchors ----

    /// @notice Anchor a finished round: the pinned block, the global model's hash and each hospital's
    /// commitment to the exact set of pseudonyms it used. An anchored round is final, whatever it holds.
    /// @dev Requires the coordinator role, a known study, a round in 1..rounds, a pinned block not in the
    /// future, as many commitments as hospitals, registered hospitals, and a round not anchored before.
    /// Emits {RoundAnchored}.
    function anchorRound(
        bytes32 studyId,
        uint32 round,
        uint64 pinnedBlock,
        bytes32 modelHash,
        address[] calldata hospitals,
        bytes32[] calldata commitments
    ) external;

    /// @notice Whether a round of a study is anchored (its model hash may be zero).
    function isAnchored(bytes32 studyId, uint32 round) external view returns (bool);

    /// @notice The model hash anchored for a round; zero when the round is not anchored (see {isAnchored}).
    function anchorOf(bytes32 studyId, uint32 round) external view returns (bytes32);

    // ---- privacy spending ----

    /// @notice Record the epsilon the calling hospital has spent on `studyId` so far (millionths, rounded down),
    /// as its node's privacy account says after a round. A node refuses to train while its own account shows
    /// less than this (a node database restored from an older backup must not spend the same budget again).
    /// @dev Requires the caller to be a hospital's current signer (a suspended one still records: it only makes its node stricter), a
    /// known study and a value no lower than the one recorded (reverts {SpendingDecreased}; an equal value is
    /// accepted, so a retried transaction does no harm). Signed by the hospital's own key: the coordinator
    /// cannot write it. Emits {SpendingRecorded}.
    function recordSpending(bytes32 studyId, uint64 epsilonSpentMicro) external;

    /// @notice The epsilon (millionths) `hospital` last recorded as spent on `studyId`; zero if none.
    function spendingOf(bytes32 studyId, address hospital) external view returns (uint64);
}
