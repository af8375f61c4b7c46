from wmrl.cli import main

if __name__ == "__main__":  # guarded: spawned env workers import this module too
    raise SystemExit(main())
