# Plot of bench/precopy_bench.sh results (docs/benchmarks.md):
#   gnuplot -e "data='docs/precopy-results.tsv'" docs/precopy.gp > docs/precopy.svg
# Columns: mib rate gap_p50 gap_p99 down_p50 down_p99 total_p50 total_p99
#          bytes/data rounds_p50 ratio_total
if (!exists("data")) data = 'docs/precopy-results.tsv'
set terminal svg size 1000,420 font "sans,11" background "white"
set datafile separator "\t"
set datafile missing "-"
set multiplot layout 1,2 title "Live migration of dvs-kv under a 90%-write load (2 cores, loopback)"
set xlabel "client calls per second (90% writes)"
set ylabel "milliseconds"
set key top left
set grid
set title "client-observed longest gap (p99) and agent downtime (p50)"
plot data using ($1==64 ? $2 : 1/0):4 with linespoints lw 2 pt 7 title "64 MiB gap p99", \
     data using ($1==256 ? $2 : 1/0):4 with linespoints lw 2 pt 5 title "256 MiB gap p99", \
     data using ($1==64 ? $2 : 1/0):5 with linespoints dt 2 pt 6 title "64 MiB downtime p50", \
     data using ($1==256 ? $2 : 1/0):5 with linespoints dt 2 pt 4 title "256 MiB downtime p50"
set title "total time (p50), and bytes sent / data"
set y2label "bytes sent / data"
set y2tics
set ytics nomirror
plot data using ($1==64 ? $2 : 1/0):7 with linespoints lw 2 pt 7 title "64 MiB total", \
     data using ($1==256 ? $2 : 1/0):7 with linespoints lw 2 pt 5 title "256 MiB total", \
     data using ($1==64 ? $2 : 1/0):9 axes x1y2 with linespoints dt 2 pt 6 title "64 MiB bytes/data", \
     data using ($1==256 ? $2 : 1/0):9 axes x1y2 with linespoints dt 2 pt 4 title "256 MiB bytes/data"
unset multiplot
