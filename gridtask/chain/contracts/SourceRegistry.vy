# pragma version 0.4.3
# pragma evm-version cancun
"""
@title SourceRegistry
@notice OpenGPU-style sources, deployed beside TaskNetwork. A source is a
        content-addressed bundle of Python code (its sha256 is the bundle hash
        the relay serves it under) with typed functions, and the terms its
        owner sets for tasks: a minimum payment, the longest expiry, and how
        a response is delivered. A source's tasks are ordinary TaskNetwork
        tasks of task type SOURCE whose model is "src:" and the first 28 hex
        digits of the source's address, so only nodes that announce that
        model run them; this contract holds no money and selects nothing.
        A source's address is derived, never deployed:
        address(keccak256(abi_encode(self, owner, nonce))[12:]), nonce
        counting the owner's sources from 0, so it is known before the
        transaction is mined and unique per registry.
        A creator may record which response of a MANUAL_CONFIRMATION task it
        confirmed (confirmResponse): the first confirmation of a task stands.
"""

# @notice Delivery methods, numbered as ogpu numbers them.
MANUAL_CONFIRMATION: constant(uint8) = 0
FIRST_RESPONSE: constant(uint8) = 1
# @notice Source statuses, numbered as ogpu numbers them.
ACTIVE: constant(uint8) = 0
INACTIVE: constant(uint8) = 1
# @notice Image environments: a bit mask (CPU 1, NVIDIA 2, AMD 4).
MAX_ENVIRONMENTS: constant(uint8) = 7

MAX_NAME: constant(uint256) = 64
MAX_TEXT: constant(uint256) = 256


struct Source:
    owner: address
    bundleHash: bytes32
    name: String[MAX_NAME]
    description: String[MAX_TEXT]
    logoUrl: String[MAX_TEXT]
    imageEnvironments: uint8
    minPayment: uint256
    minAvailableLockup: uint256
    maxExpiryDuration: uint256
    deliveryMethod: uint8
    status: uint8
    lastUpdateTime: uint256


event SourcePublished:
    source: indexed(address)
    owner: indexed(address)
    bundleHash: bytes32
    deliveryMethod: uint8


event SourceUpdated:
    source: indexed(address)
    owner: indexed(address)
    bundleHash: bytes32


event SourceInactivated:
    source: indexed(address)
    owner: indexed(address)


event ResponseConfirmed:
    task: indexed(bytes32)
    creator: indexed(address)
    response: bytes32


# @notice Every source by its address.
sources: public(HashMap[address, Source])
# @notice How many sources each owner has registered (the next one's nonce).
sourceNonce: public(HashMap[address, uint256])
# @notice The response a creator confirmed for one of its tasks (zero: none yet).
confirmedResponse: public(HashMap[address, HashMap[bytes32, bytes32]])


@view
@external
def sourceAddress(owner: address, nonce: uint256) -> address:
    """
    @notice The address the owner's source number `nonce` has (or will have).
    @param owner The source's owner.
    @param nonce The owner's count of sources before it.
    @return The derived address.
    """
    return self._address(owner, nonce)


@external
def registerSource(
    bundleHash: bytes32,
    name: String[MAX_NAME],
    description: String[MAX_TEXT],
    logoUrl: String[MAX_TEXT],
    imageEnvironments: uint8,
    minPayment: uint256,
    minAvailableLockup: uint256,
    maxExpiryDuration: uint256,
    deliveryMethod: uint8,
) -> address:
    """
    @notice Register a source owned by the caller; it is ACTIVE at once.
    @dev Emits SourcePublished. Reverts on a zero bundle hash, an empty name,
         an unknown delivery method or environment mask, or a zero expiry.
    @return The source's derived address.
    """
    self._check(bundleHash, name, imageEnvironments, maxExpiryDuration, deliveryMethod)
    nonce: uint256 = self.sourceNonce[msg.sender]
    source: address = self._address(msg.sender, nonce)
    self.sourceNonce[msg.sender] = nonce + 1
    self.sources[source] = Source(
        owner=msg.sender, bundleHash=bundleHash, name=name, description=description,
        logoUrl=logoUrl, imageEnvironments=imageEnvironments, minPayment=minPayment,
        minAvailableLockup=minAvailableLockup, maxExpiryDuration=maxExpiryDuration,
        deliveryMethod=deliveryMethod, status=ACTIVE, lastUpdateTime=block.timestamp,
    )
    log SourcePublished(source=source, owner=msg.sender, bundleHash=bundleHash,
                        deliveryMethod=deliveryMethod)
    return source


@external
def updateSource(
    source: address,
    bundleHash: bytes32,
    name: String[MAX_NAME],
    description: String[MAX_TEXT],
    logoUrl: String[MAX_TEXT],
    imageEnvironments: uint8,
    minPayment: uint256,
    minAvailableLockup: uint256,
    maxExpiryDuration: uint256,
    deliveryMethod: uint8,
):
    """
    @notice Replace an ACTIVE source's bundle and terms (its owner only).
    @dev Emits SourceUpdated. Nodes that serve the source fetch the new bundle.
    """
    self._owned_active(source)
    self._check(bundleHash, name, imageEnvironments, maxExpiryDuration, deliveryMethod)
    entry: Source = self.sources[source]
    entry.bundleHash = bundleHash
    entry.name = name
    entry.description = description
    entry.logoUrl = logoUrl
    entry.imageEnvironments = imageEnvironments
    entry.minPayment = minPayment
    entry.minAvailableLockup = minAvailableLockup
    entry.maxExpiryDuration = maxExpiryDuration
    entry.deliveryMethod = deliveryMethod
    entry.lastUpdateTime = block.timestamp
    self.sources[source] = entry
    log SourceUpdated(source=source, owner=msg.sender, bundleHash=bundleHash)


@external
def inactivateSource(source: address):
    """
    @notice Inactivate a source for good (its owner only): no new tasks.
    @dev Emits SourceInactivated. Tasks already running end as usual.
    """
    self._owned_active(source)
    self.sources[source].status = INACTIVE
    self.sources[source].lastUpdateTime = block.timestamp
    log SourceInactivated(source=source, owner=msg.sender)


@external
def confirmResponse(task: bytes32, response: bytes32):
    """
    @notice Record the response the caller confirms for its task (the first stands).
    @dev The key is (caller, task), so nobody can confirm for another creator.
    @param task The task's ID as the creator names it.
    @param response The confirmed response's ID.
    """
    assert response != empty(bytes32), "sources: empty response"
    assert self.confirmedResponse[msg.sender][task] == empty(bytes32), "sources: already confirmed"
    self.confirmedResponse[msg.sender][task] = response
    log ResponseConfirmed(task=task, creator=msg.sender, response=response)


@view
@internal
def _address(owner: address, nonce: uint256) -> address:
    digest: uint256 = convert(keccak256(abi_encode(self, owner, nonce)), uint256)
    return convert(convert(digest % 2**160, uint160), address)


@pure
@internal
def _check(bundleHash: bytes32, name: String[MAX_NAME], imageEnvironments: uint8,
           maxExpiryDuration: uint256, deliveryMethod: uint8):
    assert bundleHash != empty(bytes32), "sources: empty bundle hash"
    assert len(name) > 0, "sources: empty name"
    assert deliveryMethod <= FIRST_RESPONSE, "sources: unknown delivery method"
    assert imageEnvironments <= MAX_ENVIRONMENTS, "sources: unknown environment"
    assert maxExpiryDuration > 0, "sources: zero max expiry"


@view
@internal
def _owned_active(source: address):
    assert self.sources[source].owner != empty(address), "sources: unknown source"
    assert self.sources[source].owner == msg.sender, "sources: not the owner"
    assert self.sources[source].status == ACTIVE, "sources: inactive"
