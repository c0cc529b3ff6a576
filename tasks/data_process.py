"""Process a batch of records: shows arguments, progress markers and a result.

Lines starting with ::progress:: and ::result:: are read by taskrun: the run
page shows the progress bar and message, and the result is stored as JSON."""

import argparse
import json
import random
import time

parser = argparse.ArgumentParser(description="Process records in batches.")
parser.add_argument("--records", type=int, default=200, help="how many records")
parser.add_argument("--batch-size", type=int, default=50, help="records per batch")
parser.add_argument("--delay", type=float, default=0.2, help="seconds per batch")
parser.add_argument("--fail-rate", type=float, default=0.0, help="share of bad records, 0–1")
args = parser.parse_args()

processed = failed = 0
for start in range(0, args.records, args.batch_size):
    batch = range(start, min(start + args.batch_size, args.records))
    for _ in batch:
        if random.random() < args.fail_rate:
            failed += 1
        else:
            processed += 1
    done = batch.stop
    percent = 100 * done // max(1, args.records)
    print(f"batch {start // args.batch_size + 1}: records {batch.start}-{batch.stop - 1}")
    print(f"::progress::{percent} {done}/{args.records} records")
    time.sleep(args.delay)

print("::result::" + json.dumps({"processed": processed, "failed": failed}))
print(f"done: {processed} processed, {failed} failed")
