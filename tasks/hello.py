"""Say hello: the smallest taskrun script. Every argument is optional."""

import argparse
import os

parser = argparse.ArgumentParser(description="Greet someone.")
parser.add_argument("--name", default="world", help="who to greet")
parser.add_argument("--times", type=int, default=1, help="how many greetings")
args = parser.parse_args()

for _ in range(args.times):
    print(f"Hello, {args.name}!")
print(f"run {os.environ.get('TASKRUN_RUN_ID', '-')} of task {os.environ.get('TASKRUN_TASK', '-')}")
