#!/usr/bin/env python3
"""N writer processes, each creating M files of SIZE bytes in one directory (open, write, close).

Usage: create_parallel.py DIR [writers=8] [files_per_writer=125] [size=4096]
Prints "files_per_second elapsed_s": from the moment all writers start (a barrier) until the last close() returns.
A failed create or close (the upload is reported there) makes the exit status non-zero.
"""
import multiprocessing
import os
import sys
import time


def writer(directory, index, count, body, barrier, failures):
    barrier.wait()
    for i in range(count):
        path = os.path.join(directory, f"w{index}-f{i:05d}")
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                os.write(fd, body)
            finally:
                os.close(fd)
        except OSError as e:
            print(f"{path}: {e}", file=sys.stderr)
            with failures.get_lock():
                failures.value += 1


def main():
    directory = sys.argv[1]
    writers = int(sys.argv[2]) if len(sys.argv) > 2 else 8
    count = int(sys.argv[3]) if len(sys.argv) > 3 else 125
    body = os.urandom(int(sys.argv[4]) if len(sys.argv) > 4 else 4096)
    os.makedirs(directory, exist_ok=True)
    barrier = multiprocessing.Barrier(writers + 1)
    failures = multiprocessing.Value("i", 0)
    procs = [multiprocessing.Process(target=writer, args=(directory, w, count, body, barrier, failures))
             for w in range(writers)]
    for p in procs:
        p.start()
    barrier.wait()
    t0 = time.monotonic()
    for p in procs:
        p.join()
    elapsed = time.monotonic() - t0
    print(f"{writers * count / elapsed:.1f} {elapsed:.3f}")
    sys.exit(1 if failures.value or any(p.exitcode for p in procs) else 0)


if __name__ == "__main__":
    main()
