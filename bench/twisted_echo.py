"""Echo server on Twisted, as its users write one: the benchmark's Python peer.

Usage: python3 bench/twisted_echo.py HOST PORT
Runs the default reactor (epoll on Linux) on one thread until SIGINT or SIGTERM.
"""

import sys

from twisted.internet import protocol, reactor


class Echo(protocol.Protocol):
    def connectionMade(self):
        self.transport.setTcpNoDelay(True)

    def dataReceived(self, data):
        self.transport.write(data)


class EchoFactory(protocol.Factory):
    protocol = Echo


def main():
    host, port = sys.argv[1], int(sys.argv[2])
    reactor.listenTCP(port, EchoFactory(), backlog=1024, interface=host)
    reactor.run()


if __name__ == "__main__":
    main()
