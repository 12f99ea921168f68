// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {IConsortium} from "./IConsortium.sol";
import {SaltedEIP712} from "./SaltedEIP712.sol";

/// @title TwinLedger consent registry
/// @notice Records, per patient pseudonym and study, the patient's consent and its validity window.
/// Pseudonyms are random 32-byte values; the map from pseudonym to patient stays in the hospital's
/// database. Only the patient's own key can grant or revoke: directly, or through an EIP-712 signature
/// that a hospital or the portal relays, so that patients need no ether.
/// @dev The EIP-712 domain carries a `salt` chosen at random for each deployment (SaltedEIP712): a registry
/// redeployed at the same address must not accept the signatures, revoked grants among them, made for the
/// one before.
contract ConsentRegistry is SaltedEIP712 {

    bytes32 public constant GRANT_TYPEHASH = keccak256(
        "Grant(bytes32 pseudonym,bytes32 studyId,uint64 validFrom,uint64 validUntil,uint64 nonce,uint64 deadline)"
    );
    bytes32 public constant REVOKE_TYPEHASH =
        keccak256("Revoke(bytes32 pseudonym,bytes32 studyId,uint64 nonce,uint64 deadline)");
    bytes32 public constant CANCEL_TYPEHASH = keccak256("Cancel(bytes32 pseudonym,uint64 nonce,uint64 deadline)");

    struct Patient {
        address key; // the patient's consent key
        uint64 nonce; // next signature nonce; signatures are used in order
        uint32 index; // enrolment order, from 1; places the patient's consent windows in storage
    }

    struct Consent {
        uint64 validFrom; // unix seconds
        uint64 validUntil; // unix seconds, exclusive, at most 2^32 - 1 (year 2106); zero once revoked
    }

    struct Grant {
        bytes32 pseudonym;
        bytes32 studyId;
        uint64 validFrom;
        uint64 validUntil;
        uint64 nonce;
        uint64 deadline;
    }

    struct Revoke {
        bytes32 pseudonym;
        bytes32 studyId;
        uint64 nonce;
        uint64 deadline;
    }

    /// @notice Why a signature in a batch of revocations was skipped ({RevocationSkipped}); `Valid` if it was not.
    enum Refusal {
        Valid,
        Expired,
        UnknownPseudonym,
        NonceSpent, // relayed before, or voided by a cancellation or another revocation
        WrongNonce, // signed ahead of the patient's next nonce
        WrongSigner // not signed by the patient's consent key (forged, or for another registry or deployment)
    }

    IConsortium public immutable consortium;

    mapping(bytes32 pseudonym => Patient) private _patients;
    mapping(bytes32 pseudonym => address hospital) private _enrolledBy;
    // Consent windows, four patients to a storage word: lane (index % 4) of word (index / 4) holds the
    // patient's window as validFrom (low 32 bits) and validUntil (high 32 bits), in unix seconds.
    // Patients enrolled together share words, so a hospital relaying their grants in one transaction
    // pays for a fresh storage slot once per four patients.
    mapping(bytes32 studyId => mapping(uint256 word => uint256 lanes)) private _windows;
    // Enrolments a hospital committed to, hidden until it enrols: keccak256(abi.encode(hospital,
    // pseudonyms, keys)) => the block of the commitment. Binding the hospital's own address means a copied
    // commitment is worthless to anybody else, and a pseudonym only becomes public when it is enrolled.
    mapping(bytes32 commitment => uint256 blockNumber) private _enrolmentCommitments;
    uint32 public patientCount;

    error NotAnActiveHospital(address account);
    error AlreadyEnrolled(bytes32 pseudonym);
    error UnknownPseudonym(bytes32 pseudonym);
    error InvalidPatientKey();
    error LengthMismatch();
    error NotPatient(bytes32 pseudonym, address caller);
    error InvalidWindow(uint64 validFrom, uint64 validUntil);
    error SignatureExpired(uint64 deadline);
    error WrongNonce(bytes32 pseudonym, uint64 expected, uint64 given);
    error WrongSigner(bytes32 pseudonym);
    error TooManyPatients();
    error EnrolmentNotCommitted(bytes32 commitment);
    error IndexesNotPacked(uint256 length);

    event PatientEnrolled(bytes32 indexed pseudonym, address indexed hospital, address indexed key);
    event ConsentGranted(bytes32 indexed pseudonym, bytes32 indexed studyId, uint64 validFrom, uint64 validUntil);
    event ConsentRevoked(bytes32 indexed pseudonym, bytes32 indexed studyId);
    event SignaturesCancelled(bytes32 indexed pseudonym, uint64 nextNonce);
    event EnrolmentCommitted(address indexed hospital, bytes32 indexed commitment);
    event GrantSkipped(bytes32 indexed pseudonym, uint64 nonce);
    event RevocationSkipped(bytes32 indexed pseudonym, bytes32 indexed studyId, uint64 nonce, Refusal reason);

    /// @param consortium_ the consortium whose active hospitals may enrol patients
    /// @param domainSalt_ a random value, new for each deployment, that every consent signature commits to
    constructor(IConsortium consortium_, bytes32 domainSalt_) SaltedEIP712("TwinLedger Consent", "1", domainSalt_) {
        consortium = consortium_;
    }

    /// @notice Commit to an enrolment before making it, so that nobody can enrol the same pseudonyms first.
    /// @dev The commitment is `enrolmentCommitment(msg.sender, pseudonyms, keys)`; it reveals neither.
    /// Requirements: the caller is the current signer of an active hospital (Consortium.hospitalOf). A repeated
    /// commitment keeps its first block.
    /// Emits {EnrolmentCommitted}.
    /// @param commitment keccak256(abi.encode(hospital, pseudonyms, keys)) of the enrolment to come
    function commitEnrolment(bytes32 commitment) external {
        if (!consortium.isActiveHospital(consortium.hospitalOf(msg.sender))) revert NotAnActiveHospital(msg.sender);
        if (_enrolmentCommitments[commitment] == 0) _enrolmentCommitments[commitment] = block.number;
        emit EnrolmentCommitted(msg.sender, commitment);
    }

    /// @notice The commitment a hospital sends (with {commitEnrolment}) before enrolling these patients.
    function enrolmentCommitment(address hospital, bytes32[] calldata pseudonyms, address[] calldata keys)
        public
        pure
        returns (bytes32)
    {
        return keccak256(abi.encode(hospital, pseudonyms, keys));
    }

    /// @notice Enrol patients: bind each new pseudonym to the patient's own consent key, and record which
    /// hospital enrolled it.
    /// @dev A pseudonym is public from the moment its enrolment is sent. To make front-running useless,
    /// the hospital must have committed to exactly this enrolment (its own address, the pseudonyms and the
    /// keys) in an earlier block: another hospital that copies the pseudonyms from the pending transaction
    /// has no commitment of its own from before it saw them, and a copied commitment names the wrong hospital.
    /// Requirements: the caller is the current signer of an active hospital (Consortium.hospitalOf); the lists
    /// have the same length; the commitment was made in an earlier block (it is used up); no key is zero; no
    /// pseudonym is enrolled already.
    /// Emits {PatientEnrolled} for each patient.
    function enrol(bytes32[] calldata pseudonyms, address[] calldata keys) external {
        address hospital = consortium.hospitalOf(msg.sender); // the hospital its current signer acts for
        if (!consortium.isActiveHospital(hospital)) revert NotAnActiveHospital(msg.sender);
        if (pseudonyms.length != keys.length) revert LengthMismatch();
        bytes32 commitment = enrolmentCommitment(msg.sender, pseudonyms, keys);
        uint256 committedAt = _enrolmentCommitments[commitment];
        if (committedAt == 0 || committedAt >= block.number) revert EnrolmentNotCommitted(commitment);
        delete _enrolmentCommitments[commitment];
        uint256 count = patientCount;
        if (count + pseudonyms.length > type(uint32).max) revert TooManyPatients();
        for (uint256 i = 0; i < pseudonyms.length; ++i) {
            bytes32 pseudonym = pseudonyms[i];
            if (keys[i] == address(0)) revert InvalidPatientKey();
            if (_patients[pseudonym].key != address(0)) revert AlreadyEnrolled(pseudonym);
            ++count;
            _patients[pseudonym] = Patient({key: keys[i], nonce: 0, index: uint32(count)});
            _enrolledBy[pseudonym] = hospital;
            emit PatientEnrolled(pseudonym, hospital, keys[i]);
        }
        patientCount = uint32(count);
    }

    /// @notice Grant consent from the patient's own account.
    /// @param pseudonym the patient's pseudonym
    /// @param studyId the study the consent is for
    /// @param validFrom unix seconds from which the consent holds
    /// @param validUntil unix seconds until which (exclusive) the consent holds
    function grant(bytes32 pseudonym, bytes32 studyId, uint64 validFrom, uint64 validUntil) external {
        _grant(pseudonym, _ownIndex(pseudonym), studyId, validFrom, validUntil);
    }

    /// @notice Revoke consent from the patient's own account; takes effect from this block on.
    /// @dev Also voids every signature the patient gave and nobody relayed yet: a grant signed earlier
    /// must not bring the consent back after the patient revoked it.
    function revoke(bytes32 pseudonym, bytes32 studyId) external {
        _revoke(pseudonym, _ownIndex(pseudonym), studyId);
        _cancel(pseudonym);
    }

    /// @notice Relay one consent grant that the patient signed (EIP-712).
    function grantBySig(Grant calldata g, bytes calldata signature) external {
        uint256 index = _useSignature(g.pseudonym, g.nonce, g.deadline, _grantDigest(g), signature);
        _grant(g.pseudonym, index, g.studyId, g.validFrom, g.validUntil);
    }

    /// @notice Relay many signed grants in one transaction.
    /// @dev A grant whose nonce is already spent (somebody relayed it first, or the patient voided it) is
    /// skipped and reported, so that one signature relayed ahead cannot make the whole batch revert; any
    /// other invalid grant reverts the batch. Requirements: the lists have the same length; each grant not
    /// skipped is valid as for {grantBySig}. Emits {ConsentGranted} per grant, {GrantSkipped} per skip.
    function grantBatchBySig(Grant[] calldata grants, bytes[] calldata signatures) external {
        if (grants.length != signatures.length) revert LengthMismatch();
        for (uint256 i = 0; i < grants.length; ++i) {
            Grant calldata g = grants[i];
            Patient storage patient = _patients[g.pseudonym];
            if (patient.key != address(0) && g.nonce < patient.nonce) {
                emit GrantSkipped(g.pseudonym, g.nonce);
                continue;
            }
            uint256 index = _useSignature(g.pseudonym, g.nonce, g.deadline, _grantDigest(g), signatures[i]);
            _grant(g.pseudonym, index, g.studyId, g.validFrom, g.validUntil);
        }
    }

    /// @notice Relay a revocation that the patient signed (EIP-712).
    /// @dev Like {revoke}, it also voids every signature the patient gave and nobody relayed yet, so a grant
    /// signed ahead (at a later nonce) cannot bring the consent back. Requirements: as {grantBySig}.
    /// Emits {ConsentRevoked} and {SignaturesCancelled}.
    function revokeBySig(Revoke calldata r, bytes calldata signature) external {
        uint256 index = _useSignature(r.pseudonym, r.nonce, r.deadline, _revokeDigest(r), signature);
        _revoke(r.pseudonym, index, r.studyId);
        _cancel(r.pseudonym);
    }

    /// @notice Relay many signed revocations in one transaction.
    /// @dev Each is checked alone: an expired, replayed, out-of-order or forged revocation, or one for an
    /// unknown pseudonym, is skipped with its reason, so that no bad signature holds back the others'
    /// withdrawals. Each one used voids its patient's outstanding signatures, as {revokeBySig} does.
    /// Requirements: the lists have the same length. Emits {ConsentRevoked} and {SignaturesCancelled} per
    /// revocation used, {RevocationSkipped} per revocation skipped.
    function revokeBatchBySig(Revoke[] calldata revocations, bytes[] calldata signatures) external {
        if (revocations.length != signatures.length) revert LengthMismatch();
        for (uint256 i = 0; i < revocations.length; ++i) {
            Revoke calldata r = revocations[i];
            (Refusal refusal, uint256 index) =
                _checkSignature(r.pseudonym, r.nonce, r.deadline, _revokeDigest(r), signatures[i]);
            if (refusal != Refusal.Valid) {
                emit RevocationSkipped(r.pseudonym, r.studyId, r.nonce, refusal);
                continue;
            }
            _patients[r.pseudonym].nonce = r.nonce + 1;
            _revoke(r.pseudonym, index, r.studyId);
            _cancel(r.pseudonym);
        }
    }

    /// @notice Cancel every signature the patient has given and nobody has relayed yet.
    /// @dev Signatures are used in nonce order; the nonce jumps to the next multiple of 2^32, which voids
    /// every signature signed so far (nobody signs four billion ahead).
    function cancelSignatures(bytes32 pseudonym) external {
        if (_patients[pseudonym].key != msg.sender) revert NotPatient(pseudonym, msg.sender);
        _cancel(pseudonym);
    }

    /// @notice Relay a patient's signed request to cancel all their outstanding signatures.
    /// @param pseudonym the patient's pseudonym
    /// @param nonce a nonce of the patient's current run of 2^32 (the current one or an earlier one, so that
    /// relaying an outstanding signature first cannot defeat the cancellation); all of that run is void
    /// @param deadline unix seconds after which this cancellation can no longer be relayed
    /// @param signature the patient's EIP-712 signature of Cancel(pseudonym, nonce, deadline)
    function cancelSignaturesBySig(bytes32 pseudonym, uint64 nonce, uint64 deadline, bytes calldata signature) external {
        if (block.timestamp > deadline) revert SignatureExpired(deadline);
        Patient memory patient = _patients[pseudonym];
        if (patient.key == address(0)) revert UnknownPseudonym(pseudonym);
        if (nonce >> 32 != patient.nonce >> 32 || nonce > patient.nonce) {
            revert WrongNonce(pseudonym, patient.nonce, nonce);
        }
        bytes32 digest = _hashTypedDataV4(keccak256(abi.encode(CANCEL_TYPEHASH, pseudonym, nonce, deadline)));
        // slither-disable-next-line unused-return
        (address signer, ECDSA.RecoverError err,) = ECDSA.tryRecover(digest, signature);
        if (err != ECDSA.RecoverError.NoError || signer != patient.key) revert WrongSigner(pseudonym);
        _cancel(pseudonym);
    }

    /// @notice Whether the consent of `pseudonym` for `studyId` holds at the block of the call.
    function hasConsent(bytes32 pseudonym, bytes32 studyId) public view returns (bool) {
        Consent memory c = _window(pseudonym, studyId);
        return c.validFrom <= block.timestamp && block.timestamp < c.validUntil;
    }

    /// @notice Consent of many pseudonyms for `studyId` at the block of the call, as a bitmap:
    /// bit (i % 256) of word (i / 256) is set when pseudonyms[i] holds consent.
    function consentBitmap(bytes32 studyId, bytes32[] calldata pseudonyms) external view returns (uint256[] memory bits) {
        bits = new uint256[]((pseudonyms.length + 255) / 256);
        for (uint256 i = 0; i < pseudonyms.length; ++i) {
            if (hasConsent(pseudonyms[i], studyId)) bits[i >> 8] |= uint256(1) << (i & 255);
        }
    }

    /// @notice Like {consentBitmap}, for the one hospital that reads its own patients: bit i is set only when
    /// pseudonyms[i] holds consent, was enrolled by `hospital`, and is bound to the consent key keys[i]
    /// (the key the hospital stored when it enrolled the patient). A pseudonym another hospital enrolled,
    /// or enrolled with another key, never reads as consenting.
    function consentBitmapFor(bytes32 studyId, address hospital, bytes32[] calldata pseudonyms, address[] calldata keys)
        external
        view
        returns (uint256[] memory bits)
    {
        if (pseudonyms.length != keys.length) revert LengthMismatch();
        bits = new uint256[]((pseudonyms.length + 255) / 256);
        for (uint256 i = 0; i < pseudonyms.length; ++i) {
            bytes32 pseudonym = pseudonyms[i];
            if (
                _enrolledBy[pseudonym] == hospital && _patients[pseudonym].key == keys[i]
                    && hasConsent(pseudonym, studyId)
            ) bits[i >> 8] |= uint256(1) << (i & 255);
        }
    }

    /// @notice The enrolment index of each pseudonym, if `hospital` enrolled it bound to the consent key keys[i]
    /// (the key the hospital stored when it enrolled the patient), else 0: the binding {consentBitmapFor} checks,
    /// without the consent. An enrolment never changes once made ({enrol} refuses a pseudonym enrolled already and
    /// nothing else writes the key, the hospital or the index), so an index verified at a block the caller trusts
    /// stays true: from then on the caller may read the patient's consent by index ({consentBitmapOfIndexes}).
    /// @dev Requirements: the lists have the same length. Costs two cold storage reads per pseudonym.
    function enrolmentIndexes(address hospital, bytes32[] calldata pseudonyms, address[] calldata keys)
        external
        view
        returns (uint32[] memory indexes)
    {
        if (pseudonyms.length != keys.length) revert LengthMismatch();
        indexes = new uint32[](pseudonyms.length);
        for (uint256 i = 0; i < pseudonyms.length; ++i) {
            bytes32 pseudonym = pseudonyms[i];
            if (_enrolledBy[pseudonym] != hospital) continue;
            Patient memory patient = _patients[pseudonym];
            if (patient.key == keys[i]) indexes[i] = patient.index;
        }
    }

    /// @notice Consent for `studyId` at the block of the call of the patients at these enrolment indexes, as a
    /// bitmap: bit (i % 256) of word (i / 256) is set when the window of the patient at indexes[i] holds
    /// (validFrom <= block.timestamp < validUntil). Index 0, or one beyond {patientCount}, reads as no consent.
    /// @dev Reads consent windows only, not who enrolled a patient or with which key: it trusts the caller to pass
    /// indexes it verified with {enrolmentIndexes} (at a block on this chain), so that an index names the patient
    /// the caller means. Costs one storage read per four consecutive indexes (one per index at worst).
    /// Requirements: `indexes` is big-endian uint32s packed four bytes each (4 bytes of calldata per patient).
    function consentBitmapOfIndexes(bytes32 studyId, bytes calldata indexes)
        external
        view
        returns (uint256[] memory bits)
    {
        if (indexes.length % 4 != 0) revert IndexesNotPacked(indexes.length);
        uint256 count = indexes.length / 4;
        uint256 patients = patientCount;
        bits = new uint256[]((count + 255) / 256);
        mapping(uint256 => uint256) storage words = _windows[studyId];
        uint256 wordAt = type(uint256).max; // the word last read: consecutive patients share words
        uint256 word = 0;
        for (uint256 i = 0; i < count; ++i) {
            uint256 index = uint32(bytes4(indexes[4 * i:4 * i + 4]));
            if (index == 0 || index > patients) continue;
            if (index >> 2 != wordAt) {
                wordAt = index >> 2;
                word = words[wordAt];
            }
            uint256 lane = word >> ((index & 3) * 64);
            if (lane & type(uint32).max <= block.timestamp && block.timestamp < (lane >> 32) & type(uint32).max) {
                bits[i >> 8] |= uint256(1) << (i & 255);
            }
        }
    }

    /// @notice The consent record of `pseudonym` for `studyId`.
    function consentOf(bytes32 pseudonym, bytes32 studyId) external view returns (Consent memory) {
        return _window(pseudonym, studyId);
    }

    /// @notice The patient record (consent key and next nonce) of `pseudonym`.
    function patientOf(bytes32 pseudonym) external view returns (Patient memory) {
        return _patients[pseudonym];
    }

    /// @notice The hospital that enrolled `pseudonym`.
    function enrolledBy(bytes32 pseudonym) external view returns (address) {
        return _enrolledBy[pseudonym];
    }

    function _grantDigest(Grant calldata g) private view returns (bytes32) {
        return _hashTypedDataV4(
            keccak256(abi.encode(GRANT_TYPEHASH, g.pseudonym, g.studyId, g.validFrom, g.validUntil, g.nonce, g.deadline))
        );
    }

    function _revokeDigest(Revoke calldata r) private view returns (bytes32) {
        return _hashTypedDataV4(keccak256(abi.encode(REVOKE_TYPEHASH, r.pseudonym, r.studyId, r.nonce, r.deadline)));
    }

    /// @dev Checks the patient's signature and uses its nonce; returns the patient's index.
    function _useSignature(bytes32 pseudonym, uint64 nonce, uint64 deadline, bytes32 digest, bytes calldata signature)
        private
        returns (uint256 index)
    {
        Refusal refusal;
        (refusal, index) = _checkSignature(pseudonym, nonce, deadline, digest, signature);
        if (refusal == Refusal.Expired) revert SignatureExpired(deadline);
        if (refusal == Refusal.UnknownPseudonym) revert UnknownPseudonym(pseudonym);
        if (refusal == Refusal.NonceSpent || refusal == Refusal.WrongNonce) {
            revert WrongNonce(pseudonym, _patients[pseudonym].nonce, nonce);
        }
        if (refusal == Refusal.WrongSigner) revert WrongSigner(pseudonym);
        _patients[pseudonym].nonce = nonce + 1;
    }

    /// @dev Whether the patient's signature may be used now (`Valid`, with the patient's index) or why not.
    function _checkSignature(bytes32 pseudonym, uint64 nonce, uint64 deadline, bytes32 digest, bytes calldata signature)
        private
        view
        returns (Refusal, uint256)
    {
        if (block.timestamp > deadline) return (Refusal.Expired, 0);
        Patient memory patient = _patients[pseudonym];
        if (patient.key == address(0)) return (Refusal.UnknownPseudonym, 0);
        if (nonce < patient.nonce) return (Refusal.NonceSpent, 0);
        if (nonce > patient.nonce) return (Refusal.WrongNonce, 0);
        // slither-disable-next-line unused-return
        (address signer, ECDSA.RecoverError err,) = ECDSA.tryRecover(digest, signature);
        if (err != ECDSA.RecoverError.NoError || signer != patient.key) return (Refusal.WrongSigner, 0);
        return (Refusal.Valid, patient.index);
    }

    /// @dev The caller's own patient index, or a revert if the caller is not the patient.
    function _ownIndex(bytes32 pseudonym) private view returns (uint256) {
        Patient memory patient = _patients[pseudonym];
        if (patient.key != msg.sender) revert NotPatient(pseudonym, msg.sender);
        return patient.index;
    }

    function _cancel(bytes32 pseudonym) private {
        Patient storage patient = _patients[pseudonym];
        uint64 next = (patient.nonce | 0xFFFFFFFF) + 1;
        patient.nonce = next;
        emit SignaturesCancelled(pseudonym, next);
    }

    function _window(bytes32 pseudonym, bytes32 studyId) private view returns (Consent memory) {
        uint256 index = _patients[pseudonym].index;
        if (index == 0) return Consent(0, 0);
        uint256 lane = (_windows[studyId][index >> 2] >> ((index & 3) * 64)) & type(uint64).max;
        return Consent(uint64(lane & type(uint32).max), uint64(lane >> 32));
    }

    function _setWindow(uint256 index, bytes32 studyId, uint256 window) private {
        uint256 shift = (index & 3) * 64;
        mapping(uint256 => uint256) storage words = _windows[studyId];
        uint256 word = words[index >> 2];
        words[index >> 2] = (word & ~(uint256(type(uint64).max) << shift)) | (window << shift);
    }

    function _grant(bytes32 pseudonym, uint256 index, bytes32 studyId, uint64 validFrom, uint64 validUntil) private {
        if (validUntil <= validFrom || validUntil <= block.timestamp || validUntil > type(uint32).max) {
            revert InvalidWindow(validFrom, validUntil);
        }
        _setWindow(index, studyId, (uint256(validUntil) << 32) | validFrom);
        emit ConsentGranted(pseudonym, studyId, validFrom, validUntil);
    }

    function _revoke(bytes32 pseudonym, uint256 index, bytes32 studyId) private {
        _setWindow(index, studyId, 0);
        emit ConsentRevoked(pseudonym, studyId);
    }
}
