"""`python -m loadtest ...`: a headless locust run with SLO checks (see loadtest/README.md)."""

from gevent import monkey

monkey.patch_all()  # before grpc, ssl or anything that opens sockets is imported; locust does the same

import sys  # noqa: E402

from loadtest.run import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
