"""A Twisted client for weft's interop tests: python3 twisted_echo_client.py PORT SIZE.

Connects to 127.0.0.1:PORT, sends SIZE bytes of the shared test pattern, reads the echo until
SIZE bytes came back, closes, and writes what it received to standard output. Exits 1 with a
message on standard error if the connection fails or ends early, or after 30 s.
"""

import sys

from twisted.internet import reactor
from twisted.internet.protocol import ClientFactory, Protocol


def pattern(n):
    """The bytes the Rust side expects: (i * 31 + 7) mod 251."""
    return bytes((i * 31 + 7) % 251 for i in range(n))


class Collect(Protocol):
    def __init__(self, size):
        self.size = size
        self.received = bytearray()

    def connectionMade(self):
        self.transport.write(pattern(self.size))

    def dataReceived(self, data):
        self.received += data
        if len(self.received) >= self.size:
            self.transport.loseConnection()

    def connectionLost(self, reason):
        self.factory.result = bytes(self.received)
        if reactor.running:
            reactor.stop()


class Once(ClientFactory):
    result = None
    error = None

    def __init__(self, size):
        self.size = size

    def buildProtocol(self, addr):
        p = Collect(self.size)
        p.factory = self
        return p

    def clientConnectionFailed(self, connector, reason):
        self.error = reason.getErrorMessage()
        reactor.stop()


def main():
    port, size = int(sys.argv[1]), int(sys.argv[2])
    factory = Once(size)
    reactor.connectTCP("127.0.0.1", port, factory, timeout=10)
    reactor.callLater(30, reactor.stop)
    reactor.run()
    if factory.result is None:
        sys.stderr.write("no echo: %s\n" % (factory.error or "timed out"))
        return 1
    sys.stdout.buffer.write(factory.result)
    sys.stdout.buffer.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
