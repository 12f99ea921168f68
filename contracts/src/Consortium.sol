// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {IConsortium} from "./IConsortium.sol";

/// @title TwinLedger consortium: hospitals and their nodes, studies and their app, round anchors
/// @notice The operator registers hospitals and proposes studies; each hospital records its SuperNode's key and
/// accepts a study with its own account; the coordinator anchors every finished training round, once; each
/// hospital records the epsilon it has spent per study, which only grows. Nothing
/// here identifies a patient: studies and hospitals are named by opaque 32-byte identifiers.
/// @dev Errors, events and the NatSpec of every external function are in {IConsortium}.
contract Consortium is AccessControl, IConsortium {
    bytes32 public constant OPERATOR_ROLE = keccak256("OPERATOR_ROLE");
    bytes32 public constant COORDINATOR_ROLE = keccak256("COORDINATOR_ROLE");
    /// @notice The evaluation share a study starts with (federation/defaults.py says why).
    uint8 public constant DEFAULT_EVALUATION_SHARE_PERCENT = 10;

    /// @dev DER prefix of a P-256 SubjectPublicKeyInfo before its 65-byte point (RFC 5480): the node id is
    /// sha256 of this prefix and the point, i.e. the SHA-256 of the key's DER SPKI (node/node_keys.py).
    bytes private constant P256_SPKI_PREFIX = hex"3059301306072a8648ce3d020106082a8648ce3d030107034200";

    struct Hospital {
        bytes32 nodeId; // sha256(DER SPKI) of `nodeKey` once set; before that the placeholder of registerHospital
        bool registered;
        bool suspended;
        bytes nodeKey; // the SuperNode's auth key, 65-byte uncompressed P-256 point; empty until setNodeKey
        address signer; // the key that acts for the hospital: its registration address until rotated
    }

    struct Study {
        bytes32 purpose; // HL7 v3 PurposeOfUse code, e.g. "HRESCH"
        bytes32 taskId; // federated task identifier, e.g. "heart-disease/v1"
        bytes32 dataCategories; // bit set of data categories the study may use
        // One slot: the terms a node reads each round, and the flag that locks the app and the share (32 bytes).
        uint64 epsilonBudgetMilli; // per-hospital record-level epsilon budget x 1000
        uint64 deltaExponent; // delta = 10^-deltaExponent
        uint32 rounds;
        uint64 endsAt; // unix seconds
        bool exists;
        bool suspended;
        bool accepted; // some hospital accepted: the app and the evaluation share can no longer change
        // Percent of the epsilon budget the study's evaluation releases (and noisy counts) may spend together;
        // the rest is DP-SGD's. In the slot's last byte, so it costs no extra storage.
        uint8 evaluationSharePercent;
        bytes32 appDigest; // SHA-256 of the app's FAB (Flower's fab_hash); zero when none is recorded
    }

    mapping(address account => Hospital) private _hospitals;
    mapping(bytes32 nodeId => address account) private _hospitalOfNode;
    // A hospital's current signer -> the hospital (its registration address, its identity everywhere).
    mapping(address signer => address account) private _hospitalOfSigner;
    mapping(bytes32 studyId => Study) private _studies;
    mapping(bytes32 studyId => mapping(address hospital => bool)) private _accepted;
    mapping(bytes32 studyId => mapping(uint32 round => bytes32 modelHash)) private _anchors;
    // Apart from the model hash, which may be zero: an anchored round is final whatever it holds.
    mapping(bytes32 studyId => mapping(uint32 round => bool)) private _anchored;
    // Each hospital's epsilon spent per study, in millionths: only ever grows (recordSpending).
    mapping(bytes32 studyId => mapping(address hospital => uint64 epsilonSpentMicro)) private _spending;
    // Holders of DEFAULT_ADMIN_ROLE: never brought to zero (_revokeRole), so roles can always be granted again.
    uint256 private _adminCount;

    /// @param operator the consortium operator, who registers hospitals and proposes studies
    constructor(address operator) {
        _grantRole(DEFAULT_ADMIN_ROLE, operator);
        _grantRole(OPERATOR_ROLE, operator);
    }

    /// @inheritdoc IConsortium
    function adminCount() external view returns (uint256) {
        return _adminCount;
    }

    /// @dev Counts the admins as AccessControl grants the role (the constructor's grant included).
    function _grantRole(bytes32 role, address account) internal override returns (bool granted) {
        granted = super._grantRole(role, account);
        if (granted && role == DEFAULT_ADMIN_ROLE) ++_adminCount;
    }

    /// @dev Both revokeRole and renounceRole end here: the last admin can be neither revoked nor renounced.
    function _revokeRole(bytes32 role, address account) internal override returns (bool revoked) {
        if (role == DEFAULT_ADMIN_ROLE && hasRole(role, account)) {
            if (_adminCount == 1) revert LastAdmin(account);
            --_adminCount;
        }
        revoked = super._revokeRole(role, account);
    }

    /// @inheritdoc IConsortium
    function registerHospital(address account, bytes32 nodeId) external onlyRole(OPERATOR_ROLE) {
        Hospital storage h = _hospitals[account];
        if (h.registered) revert HospitalAlreadyRegistered(account);
        if (_hospitalOfSigner[account] != address(0)) revert SignerInUse(account);
        h.nodeId = nodeId;
        h.registered = true;
        h.signer = account;
        _hospitalOfSigner[account] = account;
        emit HospitalRegistered(account, nodeId);
    }

    /// @inheritdoc IConsortium
    function rotateHospitalKey(address newSigner) external {
        _setSigner(_callerHospital(), newSigner);
    }

    /// @inheritdoc IConsortium
    function setHospitalSigner(address account, address newSigner) external onlyRole(OPERATOR_ROLE) {
        if (!_hospitals[account].registered) revert UnknownHospital(account);
        _setSigner(account, newSigner);
    }

    function _setSigner(address account, address newSigner) private {
        if (newSigner == address(0) || _hospitalOfSigner[newSigner] != address(0)) revert SignerInUse(newSigner);
        Hospital storage h = _hospitals[account];
        address previous = h.signer;
        delete _hospitalOfSigner[previous];
        _hospitalOfSigner[newSigner] = account;
        h.signer = newSigner;
        emit HospitalKeyRotated(account, previous, newSigner);
    }

    /// @inheritdoc IConsortium
    function hospitalOf(address signer) public view returns (address) {
        return _hospitalOfSigner[signer];
    }

    /// @dev The hospital `msg.sender` signs for; reverts {UnknownHospital} for any other caller.
    function _callerHospital() private view returns (address account) {
        account = _hospitalOfSigner[msg.sender];
        if (account == address(0)) revert UnknownHospital(msg.sender);
    }

    /// @inheritdoc IConsortium
    function setHospitalSuspended(address account, bool suspended) external onlyRole(OPERATOR_ROLE) {
        if (!_hospitals[account].registered) revert UnknownHospital(account);
        _hospitals[account].suspended = suspended;
        emit HospitalSuspensionChanged(account, suspended);
    }

    /// @inheritdoc IConsortium
    function setNodeKey(bytes calldata nodeKey) external {
        address account = _callerHospital();
        Hospital storage caller = _hospitals[account];
        if (caller.suspended) revert HospitalSuspended(account);
        if (nodeKey.length != 65 || nodeKey[0] != 0x04) revert InvalidNodeKey();
        bytes32 nodeId = sha256(abi.encodePacked(P256_SPKI_PREFIX, nodeKey));
        address holder = _hospitalOfNode[nodeId];
        if (holder != address(0) && holder != account) revert NodeKeyInUse(nodeId);
        bytes32 previous = caller.nodeId;
        if (previous != nodeId && _hospitalOfNode[previous] == account) delete _hospitalOfNode[previous];
        _hospitalOfNode[nodeId] = account;
        caller.nodeId = nodeId;
        caller.nodeKey = nodeKey;
        emit NodeKeySet(account, nodeId, nodeKey);
    }

    /// @inheritdoc IConsortium
    function hospitalByNodeId(bytes32 nodeId) external view returns (address) {
        address account = _hospitalOfNode[nodeId];
        if (account == address(0)) revert UnknownNodeKey(nodeId);
        return account;
    }

    /// @inheritdoc IConsortium
    function proposeStudy(
        bytes32 studyId,
        bytes32 purpose,
        bytes32 taskId,
        bytes32 dataCategories,
        uint64 epsilonBudgetMilli,
        uint64 deltaExponent,
        uint32 rounds,
        uint64 endsAt
    ) external onlyRole(OPERATOR_ROLE) {
        if (_studies[studyId].exists) revert StudyAlreadyExists(studyId);
        if (epsilonBudgetMilli == 0 || rounds == 0 || endsAt <= block.timestamp || deltaExponent == 0) {
            revert InvalidStudyTerms();
        }
        _studies[studyId] = Study({
            purpose: purpose,
            taskId: taskId,
            dataCategories: dataCategories,
            epsilonBudgetMilli: epsilonBudgetMilli,
            deltaExponent: deltaExponent,
            rounds: rounds,
            endsAt: endsAt,
            exists: true,
            suspended: false,
            accepted: false,
            evaluationSharePercent: DEFAULT_EVALUATION_SHARE_PERCENT,
            appDigest: bytes32(0)
        });
        emit StudyProposed(studyId, purpose, taskId, epsilonBudgetMilli, rounds, endsAt);
    }

    /// @inheritdoc IConsortium
    function setStudyApp(bytes32 studyId, bytes32 appDigest) external onlyRole(OPERATOR_ROLE) {
        Study storage terms = _studies[studyId];
        if (!terms.exists) revert UnknownStudy(studyId);
        if (terms.accepted) revert StudyAppLocked(studyId);
        if (appDigest == bytes32(0)) revert InvalidStudyTerms();
        terms.appDigest = appDigest;
        emit StudyAppSet(studyId, appDigest);
    }

    /// @inheritdoc IConsortium
    function setStudyEvaluationShare(bytes32 studyId, uint8 percent) external onlyRole(OPERATOR_ROLE) {
        Study storage terms = _studies[studyId];
        if (!terms.exists) revert UnknownStudy(studyId);
        if (terms.accepted) revert StudyAppLocked(studyId);
        if (percent == 0 || percent >= 100) revert InvalidStudyTerms();
        terms.evaluationSharePercent = percent;
        emit StudyEvaluationShareSet(studyId, percent);
    }

    /// @inheritdoc IConsortium
    function setStudySuspended(bytes32 studyId, bool suspended) external onlyRole(OPERATOR_ROLE) {
        if (!_studies[studyId].exists) revert UnknownStudy(studyId);
        _studies[studyId].suspended = suspended;
        emit StudySuspensionChanged(studyId, suspended);
    }

    /// @inheritdoc IConsortium
    function acceptStudy(bytes32 studyId) external {
        address account = _callerHospital();
        if (_hospitals[account].suspended) revert HospitalSuspended(account);
        Study storage terms = _studies[studyId];
        if (!terms.exists) revert UnknownStudy(studyId);
        if (terms.suspended || block.timestamp >= terms.endsAt) revert StudyNotLive(studyId);
        _accepted[studyId][account] = true;
        if (!terms.accepted) terms.accepted = true;
        emit StudyAccepted(studyId, account);
    }

    /// @inheritdoc IConsortium
    function anchorRound(
        bytes32 studyId,
        uint32 round,
        uint64 pinnedBlock,
        bytes32 modelHash,
        address[] calldata hospitals,
        bytes32[] calldata commitments
    ) external onlyRole(COORDINATOR_ROLE) {
        Study storage terms = _studies[studyId];
        if (!terms.exists) revert UnknownStudy(studyId);
        if (round == 0 || round > terms.rounds) revert RoundOutOfRange(studyId, round);
        if (pinnedBlock > block.number) revert PinnedBlockInFuture(pinnedBlock);
        if (hospitals.length != commitments.length) revert CommitmentLengthMismatch();
        if (_anchored[studyId][round]) revert RoundAlreadyAnchored(studyId, round);
        for (uint256 i = 0; i < hospitals.length; ++i) {
            if (!_hospitals[hospitals[i]].registered) revert UnknownHospital(hospitals[i]);
        }
        _anchored[studyId][round] = true;
        _anchors[studyId][round] = modelHash;
        emit RoundAnchored(studyId, round, pinnedBlock, modelHash, hospitals, commitments);
    }

    /// @inheritdoc IConsortium
    function recordSpending(bytes32 studyId, uint64 epsilonSpentMicro) external {
        address account = _callerHospital();
        if (!_studies[studyId].exists) revert UnknownStudy(studyId);
        uint64 recorded = _spending[studyId][account];
        if (epsilonSpentMicro < recorded) revert SpendingDecreased(studyId, account, recorded, epsilonSpentMicro);
        _spending[studyId][account] = epsilonSpentMicro;
        emit SpendingRecorded(studyId, account, epsilonSpentMicro);
    }

    /// @inheritdoc IConsortium
    function spendingOf(bytes32 studyId, address hospital) external view returns (uint64) {
        return _spending[studyId][hospital];
    }

    /// @inheritdoc IConsortium
    function isStudyLiveFor(bytes32 studyId, address account) external view returns (bool) {
        Study storage terms = _studies[studyId];
        Hospital storage h = _hospitals[account];
        return terms.exists && !terms.suspended && block.timestamp < terms.endsAt && h.registered && !h.suspended
            && _accepted[studyId][account];
    }

    /// @inheritdoc IConsortium
    function isActiveHospital(address account) external view returns (bool) {
        return _hospitals[account].registered && !_hospitals[account].suspended;
    }

    /// @notice The hospital record of `account` (its node key is empty until the hospital sets one).
    function hospital(address account) external view returns (Hospital memory) {
        return _hospitals[account];
    }

    /// @notice The terms of `studyId`; reverts for an unknown study.
    function study(bytes32 studyId) external view returns (Study memory) {
        if (!_studies[studyId].exists) revert UnknownStudy(studyId);
        return _studies[studyId];
    }

    /// @inheritdoc IConsortium
    function hasAccepted(bytes32 studyId, address account) external view returns (bool) {
        return _accepted[studyId][account];
    }

    /// @inheritdoc IConsortium
    function isAnchored(bytes32 studyId, uint32 round) external view returns (bool) {
        return _anchored[studyId][round];
    }

    /// @inheritdoc IConsortium
    function anchorOf(bytes32 studyId, uint32 round) external view returns (bytes32) {
        return _anchors[studyId][round];
    }
}
