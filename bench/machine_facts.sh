#!/usr/bin/env bash
# Prints one line about the machine a benchmark ran on: CPU model, cores,
# kernel, and the VM's idle polling. Ratios between two setups measured on
# one machine hold there; how far apart they are depends on the machine
# (docs/benchmarks.md: the serve ratio on a host where a request's runs took
# 4.4 ms of CPU and on one where they took 9.3 ms), so every record says
# which it was.
set -euo pipefail
field() { sed -n "s/^$1[[:space:]]*: //p" /proc/cpuinfo | head -1; }
model="$(field 'model name') (family $(field 'cpu family'), model $(field model), stepping $(field stepping))"
# An idle CPU's wait: without a cpuidle driver ("none") guest_halt_poll_ns does nothing.
idle="$(cat /sys/devices/system/cpu/cpuidle/current_driver 2>/dev/null || echo n/a)"
poll="$(cat /sys/module/haltpoll/parameters/guest_halt_poll_ns 2>/dev/null || echo n/a)"
echo "machine: ${model}, $(nproc) cores, Linux $(uname -r), cpuidle driver ${idle}, guest_halt_poll_ns ${poll}"
