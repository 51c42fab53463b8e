#!/usr/bin/env python3
"""Source files over a line limit and functions over a length limit, outside
tests: `scripts/code-size.py [--file-max 700] [--fn-max 150] DIR...`. A function
runs from its `fn` line to the brace that closes it at the same indentation; a
file's `#[cfg(test)] mod tests` at the end is not counted. Exit 1 if any."""
import os, re, sys

def product_lines(path):
    lines = open(path).read().split('\n')
    for i, l in enumerate(lines):
        if l.startswith('#[cfg(test)]') and i + 1 < len(lines) and lines[i + 1].startswith('mod tests'):
            return lines[:i]
    return lines

def main():
    args = sys.argv[1:]
    file_max, fn_max = 700, 150
    if '--file-max' in args:
        i = args.index('--file-max'); file_max = int(args[i + 1]); del args[i:i + 2]
    if '--fn-max' in args:
        i = args.index('--fn-max'); fn_max = int(args[i + 1]); del args[i:i + 2]
    bad = 0
    for d in args:
        for root, _, files in os.walk(d):
            if '/tests' in root or root.endswith('tests') or '/target' in root:
                continue
            for f in sorted(files):
                if not f.endswith('.rs'):
                    continue
                p = os.path.join(root, f)
                lines = product_lines(p)
                if len(lines) > file_max:
                    print(f'{p}: {len(lines)} lines (over {file_max})'); bad += 1
                for i, l in enumerate(lines):
                    m = re.match(r'^(\s*)(pub(\([a-z]+\))? )?(async )?(unsafe )?fn (\w+)', l)
                    if not m or l.rstrip().endswith(';'):
                        continue
                    indent = m.group(1)
                    for j in range(i + 1, len(lines)):
                        if lines[j] == indent + '}':
                            n = j - i + 1
                            if n > fn_max:
                                print(f'{p}:{i + 1}: fn {m.group(6)}: {n} lines (over {fn_max})'); bad += 1
                            break
    sys.exit(1 if bad else 0)

main()
