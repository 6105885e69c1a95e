#!/usr/bin/env bash
# Reproduces the models storyviz ships, one target per command (each resumes where a stopped run left off):
#   bash scripts/recipes.sh data            build data/sprites and data/digits (10,000 training items each)
#   bash scripts/recipes.sh judges          train, certify and ship judge-sprites and judge-digits
#   bash scripts/recipes.sh vqgan-sprites   train the sprites image tokenizer (stage 1): L1/L2, then the discriminator
#   bash scripts/recipes.sh vqgan-sprites-wide   the wider sprites tokenizer of the shipped StoryDALL-E (L1/L2 only)
#   bash scripts/recipes.sh vqgan-sprites-wide-guests   that tokenizer tuned on stories that all have a guest
#                                           (data/sprites-guests); used by storydalle-guests
#   bash scripts/recipes.sh vqgan-sprites-wide-reference   not shipped: the sprites model's tokenizer with a decoder
#                                           that reads the source frame (after storydalle)
#   bash scripts/recipes.sh vqgan-sprites-wide-twins   the shipped sprites model's decoder: it reads the source
#                                           frame to repair looks (look twins, the discriminator, an encoder of its
#                                           own for the source frame); after storydalle, whose model it ships again
#   bash scripts/recipes.sh vqgan-digits-f4 a digits tokenizer with 16x16 codes (L1/L2 only; not used by the DALL-E)
#   bash scripts/recipes.sh arldm-vae       train ARLDM's first stage on sprites
#   bash scripts/recipes.sh arldm           train and ship ARLDM on sprites (after arldm-vae)
#   bash scripts/recipes.sh dalle-digits    digits: VQGAN (L1/L2, then the discriminator), codes, the minimal DALL-E,
#                                           its re-ranking scorer
#   bash scripts/recipes.sh storydalle      sprites: codes, DALL-E on single frames, then StoryDALL-E, its story stage,
#                                           stories with guests (after vqgan-sprites-wide), its re-ranking scorer;
#                                           vqgan-sprites-wide-twins then gives it the shipped decoder
#   bash scripts/recipes.sh storydalle-f4   the StoryDALL-E shipped until 2026-12-05, on the first tokenizer (after
#                                           vqgan-sprites); not shipped now
#   bash scripts/recipes.sh storydalle-ablations   no cross-attention, no story encoder, prompt tuning (after storydalle-f4)
#   bash scripts/recipes.sh storydalle-guests   not shipped (it copies the cast): StoryDALL-E on the guest-tuned wide
#                                           tokenizer (after vqgan-sprites-wide-guests), trained on guest stories
# WORK (default: ./work) holds data and runs. Training times measured on the 2-core CPU: benchmarks/RESULTS.md.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/env.sh"
WORK="${WORK:-$ROOT/work}"
mkdir -p "$WORK/runs"

train() {  # train TASK PRESET DATA RUN [args...]: a new run, or --resume of an unfinished one
    local task=$1 preset=$2 data=$3 run=$4
    shift 4
    if [ -f "$run/run.json" ]; then
        python -m storyviz train "$task" --data "$data" --out "$run" --resume "$@"
    else
        python -m storyviz train "$task" --preset "$preset" --data "$data" --out "$run" "$@"
    fi
}

needs() {  # needs RUN TARGET: stops unless the run RUN has exported its model (the recipe TARGET trains it)
    [ -d "$WORK/runs/$1/model" ] || { echo "run 'bash scripts/recipes.sh $2' first" >&2; exit 2; }
}

steps_done() {  # steps_done RUN: the furthest step RUN reached (its exported model or a checkpoint; 0 for none)
    python - "$1" <<'PY'
import sys
from pathlib import Path
from storyviz.training.checkpoint import list_checkpoints
from storyviz.weights import read_weights_config
run = Path(sys.argv[1])
steps = [step for step, _ in list_checkpoints(run)]
steps += [read_weights_config(run / "model").get("training_step", 0)] if (run / "model").is_dir() else []
print(max(steps, default=0))
PY
}

codes() {  # codes DATA TOKENIZER_RUN OUT: every frame's image codes, once
    [ -f "$3/meta.json" ] || python -m storyviz data tokenize --tokenizer "$2/model" --data "$1" --out "$3"
}

vqgan() {  # vqgan PRESET SET RUN GAN_STEPS: 3000 steps of L1/L2, then GAN_STEPS with the discriminator (RUN-gan)
    train vqgan "$1" "$WORK/data/$2" "$3"
    train vqgan "$1" "$WORK/data/$2" "$3-gan" --steps "$4" --set model.disc_weight=0.2 \
        --set "train.init_from=$3/model" --set train.lr=1e-4 --set train.warmup_steps=50
}

storydalle() {  # storydalle PRESET RUN_NAME [args...]: adapt the first tokenizer's sprites DALL-E to stories
    local preset=$1 run=$2
    shift 2
    train storydalle "$preset" "$WORK/data/sprites" "$WORK/runs/$run" \
        --set "model.pretrained=$WORK/runs/dalle-sprites/model" --set "model.codes=$WORK/codes/sprites" "$@"
}

# the story stage's options: the story token made to count where the story moves on (benchmarks/RESULTS.md, "The
# story token read"): the story-to-image projection, the copy gate, the story-code loss and the first-row weight
STORY_OPTIONS=(--set model.model.story_to_image=true --set model.model.copy_gate=true
    --set model.story_code_loss_weight=5 --set model.first_row_loss_weight=4)

data() {
    [ -f "$WORK/data/sprites/meta.json" ] || python -m storyviz data build sprites --out "$WORK/data/sprites" --stories 10000
    [ -f "$WORK/data/digits/meta.json" ] || python -m storyviz data build digits --out "$WORK/data/digits" --stories 10000
}

guest_data() {  # sprites stories that all have a one-off guest (any look but the named and unseen characters')
    [ -f "$WORK/data/sprites-guests/meta.json" ] ||
        python -m storyviz data build sprites --out "$WORK/data/sprites-guests" --stories 10000 --guest-share 1.0
}

case "${1:-}" in
    data) data ;;
    judges)
        data
        for set in sprites digits; do
            train judge small "$WORK/data/$set" "$WORK/runs/judge-$set"
            python "$ROOT/scripts/ship_model.py" "$WORK/runs/judge-$set/model" "judge-$set" --data "$WORK/data/$set"
        done ;;
    vqgan-sprites) data; vqgan small-f4 sprites "$WORK/runs/vqgan-sprites-f4" 2000 ;;
    vqgan-sprites-wide)  # channels 32, 1024 entries, bf16: 5000 steps of L1/L2, resumed to 8000 and to 10000 (each
        # restarts the cosine from where the run is)
        data
        for steps in 5000 8000 10000; do
            [ "$(steps_done "$WORK/runs/vqgan-sprites-wide")" -ge $steps ] ||
                train vqgan small-f4 "$WORK/data/sprites" "$WORK/runs/vqgan-sprites-wide" --steps $steps \
                    --set model.ch=32 --set model.n_embed=1024 --set train.precision=bf16
        done ;;
    vqgan-sprites-wide-guests)  # 2000 steps on stories that all have a guest: the named characters fill most frames
        # of data/sprites, and a tokenizer that saw few other looks draws them worse (benchmarks/RESULTS.md, "The
        # tokenizer's ceiling on unseen characters"). Its codes do not suit a stage 2 (RESULTS, "The story model on
        # the guest-tuned wide tokenizer")
        needs vqgan-sprites-wide vqgan-sprites-wide
        guest_data
        train vqgan small-f4 "$WORK/data/sprites-guests" "$WORK/runs/vqgan-sprites-wide-guests" --steps 2000 \
            --set model.ch=32 --set model.n_embed=1024 --set train.precision=bf16 \
            --set "train.init_from=$WORK/runs/vqgan-sprites-wide/model" --set train.lr=1e-4 --set train.warmup_steps=50 ;;
    vqgan-sprites-wide-reference)  # not shipped: the shipped tokenizer's decoder taught to read the source frame
        # (model.reference_resolutions; the codes stay the same), 2000 steps on the guest stories, resumed to 4000
        # (about 17 min each on two threads; benchmarks/RESULTS.md, "A decoder that reads the source frame"; the
        # measured run started from the shipped float16 copy of the same tokenizer, src/storyviz/assets/models/sprites)
        needs storydalle-wide-guests storydalle
        guest_data
        for steps in 2000 4000; do
            [ "$(steps_done "$WORK/runs/vqgan-sprites-wide-reference")" -ge $steps ] ||
                train vqgan small-f4 "$WORK/data/sprites-guests" "$WORK/runs/vqgan-sprites-wide-reference" \
                    --steps $steps --set model.ch=32 --set model.n_embed=1024 --set train.precision=bf16 \
                    --set 'model.reference_resolutions=[16,32]' --set model.decoder_only=true --set model.look_swap=0 \
                    --set "train.init_from=$WORK/runs/storydalle-wide-guests/model" --set train.lr=2e-4 \
                    --set train.warmup_steps=100
        done ;;
    vqgan-sprites-wide-twins)  # the shipped decoder: it repairs looks from the source frame (the codes stay the
        # same). 2000 steps on look twins (L1/L2), then with the discriminator and the reference's own encoder
        # 2000 steps, resumed to 5000, then to 10000 with the repair weight on the pixels a twin changed, then to
        # 12500 with 30% of the frames decoded without the reference (about 20 min per 2000 steps on two threads;
        # benchmarks/RESULTS.md, "Where `test_unseen` appearance is lost", "Weighing the repaired pixels" and "More
        # frames without the reference"). The measured run's first stage was step 2000 of a 4000-step schedule,
        # started from the shipped float16 tokenizer
        needs storydalle-wide-guests storydalle
        needs scorer-sprites storydalle
        guest_data
        twins="$WORK/runs/vqgan-sprites-wide-twins-l1"
        reference=(--set model.ch=32 --set model.n_embed=1024 --set train.precision=bf16
            --set 'model.reference_resolutions=[16,32]' --set model.decoder_only=true --set model.look_swap=0.5)
        train vqgan small-f4 "$WORK/data/sprites-guests" "$twins" --steps 2000 "${reference[@]}" \
            --set "train.init_from=$WORK/runs/storydalle-wide-guests/model" --set train.lr=2e-4 \
            --set train.warmup_steps=100
        for steps in 2000 5000 10000 12500; do
            repair=0 drop=0.1
            [ $steps -le 5000 ] || repair=1
            [ $steps -le 10000 ] || drop=0.3
            [ "$(steps_done "$WORK/runs/vqgan-sprites-wide-twins")" -ge $steps ] ||
                train vqgan small-f4 "$WORK/data/sprites-guests" "$WORK/runs/vqgan-sprites-wide-twins" \
                    --steps $steps "${reference[@]}" --set model.reference_encoder=true \
                    --set model.disc_weight=0.2 --set "train.init_from=$twins/model" --set train.lr=1e-4 \
                    --set train.warmup_steps=50 --set model.repair_weight=$repair --set model.reference_drop=$drop
        done
        # the storydalle target's model again, with this decoder (it refuses a tokenizer that makes other codes)
        python "$ROOT/scripts/ship_model.py" "$WORK/runs/storydalle-wide-guests/model" sprites \
            --sampling top_k=64 --sampling guidance=3 --sampling guidance_start=64 \
            --scorer "$WORK/runs/scorer-sprites/model" --image-tokenizer "$WORK/runs/vqgan-sprites-wide-twins/model" ;;
    vqgan-digits-f4) data; train vqgan small-f4 "$WORK/data/digits" "$WORK/runs/vqgan-digits-f4" ;;
    arldm-vae) data; train arldm-vae small "$WORK/data/sprites" "$WORK/runs/arldm-vae" ;;
    arldm)
        needs arldm-vae arldm-vae
        # 16000 steps: the run on the project machine did the preset's 3000 (far from the targets), was resumed
        # toward 12000 and stopped at 6120, then resumed to 11000, 13000 and 16000 (each new step count restarts the
        # cosine schedule from where the run is); from scratch this is one 16000-step cosine
        train arldm small "$WORK/data/sprites" "$WORK/runs/arldm" --set "model.vae_path=$WORK/runs/arldm-vae/model" \
            --steps 16000
        # into the package, with the sampling settings its measured results used (benchmarks/RESULTS.md)
        python "$ROOT/scripts/ship_model.py" "$WORK/runs/arldm/model" sprites-arldm \
            --sampling guidance=3 --sampling steps=25 ;;
    dalle-digits)
        data
        vqgan small digits "$WORK/runs/vqgan-digits" 1000
        codes "$WORK/data/digits" "$WORK/runs/vqgan-digits-gan" "$WORK/codes/digits"
        # the shipped model: the preset's 2400 steps, then resumed to 4000 and to 7000 (each restarts the cosine
        # schedule from where the run is)
        for steps in 2400 4000 7000; do
            [ "$(steps_done "$WORK/runs/dalle-digits")" -ge $steps ] ||
                train dalle small "$WORK/data/digits" "$WORK/runs/dalle-digits" --steps $steps \
                    --set "model.codes=$WORK/codes/digits"
        done
        # the re-ranking scorer (caption-frame, contrastive): batches of 96 single frames
        train scorer small "$WORK/data/digits" "$WORK/runs/scorer-digits" --steps 1200 --set train.batch_size=96
        # into the package, with the sampling settings chosen on val (benchmarks/RESULTS.md)
        python "$ROOT/scripts/ship_model.py" "$WORK/runs/dalle-digits/model" digits \
            --sampling top_k=8 --sampling guidance=5 --sampling candidates=4 --scorer "$WORK/runs/scorer-digits/model" ;;
    storydalle)
        needs vqgan-sprites-wide vqgan-sprites-wide
        guest_data
        codes "$WORK/data/sprites" "$WORK/runs/vqgan-sprites-wide" "$WORK/codes/sprites-wide"
        codes "$WORK/data/sprites-guests" "$WORK/runs/vqgan-sprites-wide" "$WORK/codes/sprites-guests-wide"
        # 16x16 codes per frame: batches of 16 frames, 3000 steps (about 64 min on two threads)
        train dalle small "$WORK/data/sprites" "$WORK/runs/dalle-sprites-wide" --steps 3000 \
            --set "model.codes=$WORK/codes/sprites-wide" --set train.batch_size=16 --set train.precision=bf16
        # stories: 2000 steps of plain adaptation (40 min), 1500 with the story options (29 min), then 1500 more
        # with them on stories that all have a guest, where the looks to carry over from the source frame are not
        # the named characters' (about 30 min; benchmarks/RESULTS.md, "The story chain on the wide tokenizer")
        train storydalle small "$WORK/data/sprites" "$WORK/runs/storydalle-wide" --set train.steps=2000 \
            --set "model.pretrained=$WORK/runs/dalle-sprites-wide/model" --set "model.codes=$WORK/codes/sprites-wide" \
            --set train.precision=bf16
        train storydalle small "$WORK/data/sprites" "$WORK/runs/storydalle-wide-story" "${STORY_OPTIONS[@]}" \
            --set "model.pretrained=$WORK/runs/storydalle-wide/model" --set "model.codes=$WORK/codes/sprites-wide" \
            --set train.steps=1500 --set train.lr=1e-4 --set train.precision=bf16
        train storydalle small "$WORK/data/sprites-guests" "$WORK/runs/storydalle-wide-guests" "${STORY_OPTIONS[@]}" \
            --set "model.pretrained=$WORK/runs/storydalle-wide-story/model" \
            --set "model.codes=$WORK/codes/sprites-guests-wide" --set train.steps=1500 --set train.lr=1e-4 \
            --set train.precision=bf16
        # the re-ranking scorer (caption-frame, contrastive, on frames: no tokenizer): the preset's 3000 steps of
        # 16 stories, each frame also against its caption with one name swapped, cast heads that learn who is
        # drawn from the captions' names, and each caption read after its story's 4 earlier ones (about 30 min on
        # two threads); shipped as a part that `--candidates N` uses, one candidate by default
        # (benchmarks/RESULTS.md, "How much re-ranking can gain", "Cast heads", "Pronouns in re-ranking")
        train scorer small "$WORK/data/sprites" "$WORK/runs/scorer-sprites" --set model.name_negatives=1 \
            --set model.cast_weight=1 --set model.model.context=4
        # into the package as the default model, with the sampling settings chosen on val for the model before
        # and checked again on val for this one (benchmarks/RESULTS.md, "The story chain on the wide tokenizer")
        python "$ROOT/scripts/ship_model.py" "$WORK/runs/storydalle-wide-guests/model" sprites \
            --sampling top_k=64 --sampling guidance=3 --sampling guidance_start=64 \
            --scorer "$WORK/runs/scorer-sprites/model" ;;
    storydalle-f4)  # the chain shipped as `sprites` until 2026-12-05, on the first sprites tokenizer
        needs vqgan-sprites-f4-gan vqgan-sprites
        codes "$WORK/data/sprites" "$WORK/runs/vqgan-sprites-f4-gan" "$WORK/codes/sprites"
        # 16x16 codes per frame (4x the digits' 8x8): batches of 16 frames keep a step near a second on one core
        train dalle small "$WORK/data/sprites" "$WORK/runs/dalle-sprites" --set "model.codes=$WORK/codes/sprites" \
            --steps 3000 --set train.batch_size=16
        storydalle small storydalle-sprites
        # then the story options, 2000 steps on from the adapted model
        storydalle small storydalle-story --set "model.pretrained=$WORK/runs/storydalle-sprites/model" \
            "${STORY_OPTIONS[@]}" --set train.steps=2000 --set train.lr=1e-4 ;;
    storydalle-ablations)  # after storydalle-f4: the same adaptation without each new part, and prompt tuning
        storydalle small storydalle-no-cross --set model.model.cross_attention_every=0
        storydalle small storydalle-no-story --set model.model.story_encoder=false --set model.model.dalle.prefix_len=0
        storydalle small-prompt storydalle-prompt ;;
    storydalle-guests)
        needs vqgan-sprites-wide-guests vqgan-sprites-wide-guests
        guest_data
        codes "$WORK/data/sprites-guests" "$WORK/runs/vqgan-sprites-wide-guests" "$WORK/codes/sprites-guests"
        train dalle small "$WORK/data/sprites-guests" "$WORK/runs/dalle-sprites-guests" --steps 3000 \
            --set "model.codes=$WORK/codes/sprites-guests" --set train.batch_size=16 --set train.precision=bf16
        # one story run with the options measured on the shipped chain (benchmarks/RESULTS.md, "Characters entering
        # and leaving, and copying where the neighbours agree"). Run on the project machine to step 3000 (about 1 h):
        # unseen looks four times the shipped model's, but it copies the source frame's cast (RESULTS, "The story
        # model on the guest-tuned wide tokenizer"), so it is not shipped. The cause measured there: this stage 2
        # hardly draws named characters from a caption (char_f1 0.16; on the wide tokenizer's codes 0.71), and the
        # guest-tuned codes are the likely reason (RESULTS)
        train storydalle small "$WORK/data/sprites-guests" "$WORK/runs/storydalle-guests" "${STORY_OPTIONS[@]}" \
            --set "model.pretrained=$WORK/runs/dalle-sprites-guests/model" --set "model.codes=$WORK/codes/sprites-guests" \
            --set model.model.copy_source=true --set model.input_noise=0.15 \
            --set train.steps=5000 --set train.precision=bf16 ;;
    *) sed -n '2,27p' "$0"; exit 2 ;;
esac
