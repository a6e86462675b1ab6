# Viewer figures of issue 19: the browser test on trained avatars at 256 and 512 px (prints "viewer figures: {...}").
# Usage: bash docs/viewer-figures.sh after editing the two avatar folders (>= 2 appearances each).
for av in /tmp/ux/av /tmp/tfs/work; do for size in 256 512; do
  echo "== $av $size"
  PERENNIAL_BROWSER_TESTS=required PERENNIAL_VIEWER_AVATAR=$av PERENNIAL_VIEWER_SIZE=$size OMP_WAIT_POLICY=PASSIVE \
    timeout 300 .venv/bin/python -m pytest -q -s tests/test_viewer.py -k test_viewer_in_browser 2>&1 | grep -E "viewer figures|passed|failed"
done; done
