#!/usr/bin/env bash
# The whole pipeline offline, in a few minutes on a laptop CPU: synthetic clips in the MSR-VTT layout,
# a tiny randomly initialised X-CLIP (saved, then loaded through from_pretrained like the real one),
# tokenizer, training (with its curves), evaluation on the held-out test split, and a caption for one clip.
# This proves the pipeline works; it says nothing about caption quality on real video.
#     bash quickstart.sh            (everything goes under quickstart/)
set -euo pipefail
cd "$(dirname "$0")"
out=${QUICKSTART_DIR:-quickstart}
python=${PYTHON:-python}
# The quickstart's tensors are tiny: one torch thread beats two that wait on each other on a small machine;
# DataLoader workers still decode on the other core.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

$python synthetic.py --num_videos ${QUICKSTART_VIDEOS:-600} --out_dir "$out/data" --tiny_xclip "$out/tiny-xclip"
$python create_tokenizer.py --data_dir "$out/data" --vocab_size 400 --out_prefix "$out/tokenizer"
$python train.py --data_dir "$out/data" --tokenizer_path "$out/tokenizer.model" --xclip_model "$out/tiny-xclip" \
    --cache_dir "$out/cache" --out_dir "$out/models" --overwrite --epochs ${QUICKSTART_EPOCHS:-10} --batch_size 64 --hidden_dim 256 --embed_dim 128 \
    --warmup_steps 100 --patience 0 --num_workers 2
$python evaluate.py --model_path "$out/models/best.pt" --data_dir "$out/data" --split test \
    --xclip_model "$out/tiny-xclip" --cache_dir "$out/cache" --out "$out/results.json"
clip=$($python -c "import sys; from annotations import load_msrvtt; m = load_msrvtt(sys.argv[1]); print(m.video_path(m.splits['test'][0]))" "$out/data")
echo "training curves: $out/models/curves.png"
echo "caption for $clip:"
$python inference.py --model_path "$out/models/best.pt" --xclip_model "$out/tiny-xclip" --video_path "$clip"
