"""`python -m loadtest ...`: a headless locust run with SLO checks; `python -m loadtest sweep ...`: an open-loop
capacity sweep (plain asyncio, no gevent). See loadtest/README.md and docs/loadtest.md."""

import sys

if __name__ == "__main__":
    if sys.argv[1:2] == ["sweep"]:
        from loadtest.sweep import main as sweep_main

        sys.exit(sweep_main(sys.argv[2:]))
    from gevent import monkey

    monkey.patch_all()  # before grpc, ssl or anything that opens sockets is imported; locust does the same

    from loadtest.run import main

    sys.exit(main(sys.argv[1:]))
