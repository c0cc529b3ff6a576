"""What the test suite needs beyond Python packages, installed when missing."""

import sys


def main() -> int:
    return 0


if __name__ == "__main__":
    sys.exit(main())
