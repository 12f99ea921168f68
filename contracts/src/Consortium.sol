// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {IConsortium} from "./IConsortium.sol";

/// @title TwinLedger consortium: hospitals, studies (data-use agreements) and round anchors
/// @notice The operator registers hospitals and proposes studies; each hospital accepts a study with
/// its own account; the coordinator anchors every finished training round. Nothing here identifies a
/// patient: studies and hospitals are named by opaque 32-byte identifiers.
contract Consortium is AccessControl, IConsortium {
    bytes32 public constant OPERATOR_ROLE = keccak256("OPERATOR_ROLE");
    bytes32 public constant COORDINATOR_ROLE = keccak256("COORDINATOR_ROLE");

    struct Hospital {
        bytes32 nodeId;
        bool registered;
        bool suspended;
    }

    struct Study {
        bytes32 purpose; // HL7 v3 PurposeOfUse code, e.g. "HRESCH"
        bytes32 taskId; // federated task identifier, e.g. "heart-disease/v1"
        bytes32 dataCategories; // bit set of data categories the study may use
        uint64 epsilonBudgetMilli; // per-hospital record-level epsilon budget x 1000
        uint64 deltaExponent; // delta = 10^-deltaExponent
        uint32 rounds;
        uint64 endsAt; // unix seconds
        bool exists;
        bool suspended;
    }

    mapping(address account => Hospital) private _hospitals;
    mapping(bytes32 studyId => Study) private _studies;
    mapping(bytes32 studyId => mapping(address hospital => bool)) private _accepted;
    mapping(bytes32 studyId => mapping(uint32 round => bytes32 modelHash)) private _anchors;

    error HospitalAlreadyRegistered(address account);
    error UnknownHospital(address account);
    error HospitalSuspended(address account);
    error StudyAlreadyExists(bytes32 studyId);
    error UnknownStudy(bytes32 studyId);
    error StudyNotLive(bytes32 studyId);
    error InvalidStudyTerms();
    error RoundAlreadyAnchored(bytes32 studyId, uint32 round);
    error RoundOutOfRange(bytes32 studyId, uint32 round);
    error PinnedBlockInFuture(uint64 pinnedBlock);
    error CommitmentLengthMismatch();

    event HospitalRegistered(address indexed account, bytes32 indexed nodeId);
    event HospitalSuspensionChanged(address indexed account, bool suspended);
    event StudyProposed(bytes32 indexed studyId, bytes32 indexed purpose, bytes32 taskId, uint64 epsilonBudgetMilli, uint32 rounds, uint64 endsAt);
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

    /// @param operator the consortium operator, who registers hospitals and proposes studies
    constructor(address operator) {
        _grantRole(DEFAULT_ADMIN_ROLE, operator);
        _grantRole(OPERATOR_ROLE, operator);
    }

    /// @notice Register a hospital's account and the identity of its node.
    /// @param account the hospital's Ethereum account
    /// @param nodeId opaque identifier of the hospital's node
    function registerHospital(address account, bytes32 nodeId) external onlyRole(OPERATOR_ROLE) {
        if (_hospitals[account].registered) revert HospitalAlreadyRegistered(account);
        _hospitals[account] = Hospital({nodeId: nodeId, registered: true, suspended: false});
        emit HospitalRegistered(account, nodeId);
    }

    /// @notice Suspend or reinstate a hospital; a suspended hospital can neither accept studies nor train.
    function setHospitalSuspended(address account, bool suspended) external onlyRole(OPERATOR_ROLE) {
        if (!_hospitals[account].registered) revert UnknownHospital(account);
        _hospitals[account].suspended = suspended;
        emit HospitalSuspensionChanged(account, suspended);
    }

    /// @notice Propose a study: the data-use agreement hospitals accept one by one.
    /// @param studyId random 32-byte identifier of the study
    /// @param purpose HL7 v3 PurposeOfUse code as bytes32
    /// @param taskId federated task identifier as bytes32
    /// @param dataCategories bit set of the data categories the study may use
    /// @param epsilonBudgetMilli per-hospital epsilon budget, in thousandths
    /// @param deltaExponent delta of the (epsilon, delta) budget is 10^-deltaExponent
    /// @param rounds number of training rounds the study allows
    /// @param endsAt unix time (seconds) after which no hospital may use data for the study
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
            suspended: false
        });
        emit StudyProposed(studyId, purpose, taskId, epsilonBudgetMilli, rounds, endsAt);
    }

    /// @notice Suspend or resume a study for every hospital.
    function setStudySuspended(bytes32 studyId, bool suspended) external onlyRole(OPERATOR_ROLE) {
        if (!_studies[studyId].exists) revert UnknownStudy(studyId);
        _studies[studyId].suspended = suspended;
        emit StudySuspensionChanged(studyId, suspended);
    }

    /// @notice Accept a study on behalf of the calling hospital.
    function acceptStudy(bytes32 studyId) external {
        Hospital storage caller = _hospitals[msg.sender];
        if (!caller.registered) revert UnknownHospital(msg.sender);
        if (caller.suspended) revert HospitalSuspended(msg.sender);
        Study storage terms = _studies[studyId];
        if (!terms.exists) revert UnknownStudy(studyId);
        if (terms.suspended || block.timestamp >= terms.endsAt) revert StudyNotLive(studyId);
        _accepted[studyId][msg.sender] = true;
        emit StudyAccepted(studyId, msg.sender);
    }

    /// @notice Anchor a finished round: the pinned block, the global model's hash and each hospital's
    /// commitment to the exact set of pseudonyms it used.
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
        if (_anchors[studyId][round] != bytes32(0)) revert RoundAlreadyAnchored(studyId, round);
        for (uint256 i = 0; i < hospitals.length; ++i) {
            if (!_hospitals[hospitals[i]].registered) revert UnknownHospital(hospitals[i]);
        }
        _anchors[studyId][round] = modelHash;
        emit RoundAnchored(studyId, round, pinnedBlock, modelHash, hospitals, commitments);
    }

    /// @notice Whether the hospital `account` may use patient data for `studyId` now (at the block of the call).
    function isStudyLiveFor(bytes32 studyId, address account) external view returns (bool) {
        Study storage terms = _studies[studyId];
        Hospital storage h = _hospitals[account];
        return terms.exists && !terms.suspended && block.timestamp < terms.endsAt && h.registered && !h.suspended
            && _accepted[studyId][account];
    }

    /// @notice Whether `account` is a registered hospital that is not suspended.
    function isActiveHospital(address account) external view override returns (bool) {
        return _hospitals[account].registered && !_hospitals[account].suspended;
    }

    /// @notice The hospital record of `account`.
    function hospital(address account) external view returns (Hospital memory) {
        return _hospitals[account];
    }

    /// @notice The terms of `studyId`; reverts for an unknown study.
    function study(bytes32 studyId) external view returns (Study memory) {
        if (!_studies[studyId].exists) revert UnknownStudy(studyId);
        return _studies[studyId];
    }

    /// @notice Whether the hospital `account` accepted `studyId`.
    function hasAccepted(bytes32 studyId, address account) external view returns (bool) {
        return _accepted[studyId][account];
    }

    /// @notice The model hash anchored for a round, or zero if the round is not anchored.
    function anchorOf(bytes32 studyId, uint32 round) external view returns (bytes32) {
        return _anchors[studyId][round];
    }
}
