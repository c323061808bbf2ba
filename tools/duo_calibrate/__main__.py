"""`/usr/bin/python3 -m tools.duo_calibrate ...` (from the repository root): see calibrate.py."""
import sys

from tools.duo_calibrate.calibrate import main

sys.exit(main())
