#!/usr/bin/env bash
# Draws bench/results/ratios.tsv (one row per figure: label, measured ratio
# to its floor or peer, target ratio; lower is better, 1 = as fast as the
# floor or peer) as a horizontal bar chart, bench/results/ratios.svg, with
# each target as a tick. gnuplot comes from Debian (gnuplot-nox); it is only
# needed to redraw the picture, so install-deps does not install it.
#
# Usage: bench/plot_ratios.sh [TSV] [SVG]
set -euo pipefail
cd "$(dirname "$0")/.."
tsv=${1:-bench/results/ratios.tsv}
svg=${2:-bench/results/ratios.svg}
command -v gnuplot >/dev/null || {
  echo "plot_ratios: needs gnuplot: apt-get install gnuplot-nox" >&2
  exit 1
}
rows=$(grep -cv '^#' "$tsv")
[ "$rows" -gt 0 ] || { echo "plot_ratios: no rows in $tsv" >&2; exit 1; }
height=$((140 + 28 * rows))
gnuplot <<EOF
set terminal svg size 1100,${height} dynamic noenhanced font "sans,12" background "white"
set output "${svg}"
set datafile separator "\t"
set title "measured / floor or peer (lower is better); red bar = target"
set style fill solid 0.8 border -1
set xrange [0:*]
set yrange [${rows}-0.4:-0.6]
set ytics nomirror
set xtics nomirror
set grid xtics
set key outside bottom center horizontal
set xlabel "ratio"
plot "${tsv}" using (\$2/2):0:(\$2/2):(0.35):yticlabels(1) \
       with boxxyerror lc rgb "#4477aa" title "measured", \
     "" using 3:0:(0):(0.45) with xyerrorbars pt 0 lw 3 lc rgb "#cc3311" \
       title "target"
EOF
echo "plot_ratios: wrote $svg ($rows rows)"
