"""A Twisted echo server for weft's interop tests.

Listens on 127.0.0.1 (an ephemeral port), prints the port on one line, and echoes every byte
until its standard input closes (the test that started it is done) or 60 s pass.
"""

import sys

from twisted.internet import reactor, stdio
from twisted.internet.protocol import Factory, Protocol


class Echo(Protocol):
    def dataReceived(self, data):
        self.transport.write(data)


class StopOnEof(Protocol):
    def connectionLost(self, reason):
        if reactor.running:
            reactor.stop()


def main():
    port = reactor.listenTCP(0, Factory.forProtocol(Echo), interface="127.0.0.1")
    print(port.getHost().port, flush=True)
    stdio.StandardIO(StopOnEof())
    reactor.callLater(60, reactor.stop)
    reactor.run()


if __name__ == "__main__":
    sys.exit(main())
