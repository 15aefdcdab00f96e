"""The NBD protocol as pure framing: parse and build handshake and transmission frames.

No sockets here, so every frame can be unit-tested and fuzzed. Follows the NBD protocol document
(fixed newstyle negotiation, simple and structured replies).
"""
