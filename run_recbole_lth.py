"""Run a sparse-table search on a RecBole model, like RecBole's run_recbole.py.

    python run_recbole_lth.py --model=LightGCN --dataset=ml-100k --method=imp
"""
import sys

from recbole_lth.cli import main

if __name__ == "__main__":
    sys.exit(main())
