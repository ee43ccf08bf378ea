#!/usr/bin/env bash
# The CUDA paths end to end on one GPU, with timings: `bash benchmarks/cuda_check.sh OUT [WORK]` (e4ecli installed,
# a CUDA build of torch). bench at batch 1 and 8 in fp32/fp16/bf16; CPU vs CUDA agreement; invert (fp32, fp16,
# bf16, a rerun that skips), edit, a strength sweep, render, PTI and W+ refinement, and `e4e train` (with and
# without --amp) then invert with the trained checkpoint, each with its wall time and peak memory. Everything is
# written under OUT (log.txt, bench_b1.json, bench_b8.json, agreement.json); nothing is downloaded.
set -o pipefail
OUT=${1:?usage: cuda_check.sh OUT [WORK]}; W=${2:-$OUT/work}; mkdir -p "$OUT" "$W"
export PYTHONUNBUFFERED=1 E4E_HOME=${E4E_HOME:-$W/e4e_home} COLUMNS=${COLUMNS:-160}
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv | tee $OUT/env.txt
nproc | tee -a $OUT/env.txt
e4e() { /usr/bin/time -f "  [%e s wall, %M KB max RSS]" python3 -m e4ecli "$@"; }
{
echo "== bench b1"; e4e bench --device cuda --precision fp32,fp16,bf16 --iters 5 -b 1 --json $OUT/bench_b1.json
echo "== bench b8"; e4e bench --device cuda --precision fp32,fp16,bf16 --iters 5 -b 8 --json $OUT/bench_b8.json
echo "== build + agreement"; python3 "$(dirname "$0")/cuda_check.py" $OUT $W
CK=$W/ck1024.pt
echo "== invert 64 photos cuda fp32 b8"; e4e invert $W/photos -o $W/lat -c $CK --device cuda -b 8
echo "== rerun (skips)"; e4e invert $W/photos -o $W/lat -c $CK --device cuda -b 8
echo "== invert 64 photos cuda fp16 b8"; e4e invert $W/photos -o $W/lat16 -c $CK --device cuda -b 8 --precision fp16
echo "== invert 64 photos cuda bf16 b8 + reconstructions"; e4e invert $W/photos -o $W/latbf -c $CK --device cuda -b 8 --precision bf16 --save-reconstructions
echo "== edit sefa"; e4e edit $W/lat -o $W/ed -c $CK -d sefa:0:2,3,4,5 -s 10 --device cuda
echo "== edit sweep"; e4e edit $W/lat/p00.npy -o $W/sweep -c $CK -d sefa:1 -s -3:3:7 --device cuda
echo "== render"; e4e render $W/lat -o $W/ren -c $CK --device cuda
echo "== pti 8 photos"; mkdir -p $W/p8; cp $W/photos/p0[0-7].png $W/p8/; e4e invert $W/p8 -o $W/pti -c $CK --device cuda --refine pti --refine-steps 30 --lpips-weight 0
echo "== refine w+"; e4e invert $W/p8 -o $W/wplus -c $CK --device cuda --refine w+ --refine-steps 30 --lpips-weight 0
echo "== train 64px"; e4e train --exp-dir $W/exp --data $W/train --val-data $W/train --stylegan-weights $W/g64.pt --encoder-init none --id-lambda 0 --lpips-lambda 0 --input-size 64 --batch-size 4 --test-batch-size 4 --workers 2 --max-steps 40 --progressive-start 5 --progressive-step-every 5 --w-discriminator-lambda 0.1 --use-w-pool --d-reg-every 4 --start-from-latent-avg --val-interval 20 --save-interval 20 --board-interval 10 --device cuda
echo "== train 64px amp"; e4e train --exp-dir $W/exp_amp --data $W/train --stylegan-weights $W/g64.pt --encoder-init none --id-lambda 0 --lpips-lambda 0 --input-size 64 --batch-size 4 --workers 2 --max-steps 20 --progressive-start 5 --progressive-step-every 5 --w-discriminator-lambda 0.1 --save-interval 20 --device cuda --amp
echo "== invert with trained"; e4e invert $W/p8 -o $W/lat_tr -c $W/exp/checkpoints/iteration_40.pt --device cuda
ls $W/exp/checkpoints; tail -c 600 $W/exp/metrics.jsonl
} 2>&1 | tee $OUT/log.txt
