#!/usr/bin/env bash
# Benchmark: RunConvert side by side with the reference tools, in one run, on the shared
# corpus, in two modes:
# - one-shot: our commands against the tools'. Each command runs once to warm up, then
#   RUNS times under GNU time; the table shows median wall seconds, the ratio ours ÷
#   theirs, peak memory and output sizes. Whole processes, start-up included, like
#   reference_tools.sh.
# - API: the same cases as whole jobs through a running server, as a client runs them
#   (create, /wait, download the result; tests/bench/api.py), against the tool medians
#   measured just before.
#
#   bash tests/bench/run.sh [RUNS]        (default 5; installs the reference tools if missing)
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=${1:-5}
C=${RUNCONVERT_CORPUS:-$(cd ../shared/bench/corpus && pwd)}
O=$(mktemp -d /tmp/runconvert-bench.XXXXXX)
trap 'rm -rf "$O"' EXIT

need=()
command -v vipsthumbnail >/dev/null || need+=(libvips-tools)
command -v convert >/dev/null && convert -version 2>/dev/null | grep -q ImageMagick || need+=(imagemagick)
command -v qpdf >/dev/null || need+=(qpdf)
command -v gs >/dev/null || need+=(ghostscript)
command -v pdftoppm >/dev/null || need+=(poppler-utils)
command -v tesseract >/dev/null || need+=(tesseract-ocr tesseract-ocr-eng)
command -v ffmpeg >/dev/null || need+=(ffmpeg)
command -v soffice >/dev/null || need+=(libreoffice-writer-nogui python3-uno)
command -v curl >/dev/null || need+=(curl)
command -v nasm >/dev/null || need+=(nasm)
command -v jpegoptim >/dev/null || need+=(jpegoptim)
command -v optipng >/dev/null || need+=(optipng)
command -v pngquant >/dev/null || need+=(pngquant)
[ -x /usr/bin/time ] || need+=(time)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]}" >&2
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
cargo build --release -q -p runconvert
RC=$(pwd)/target/release/runconvert

J6=$C/images/photo_6000x4000.jpg
J0=$C/images/photo_640x480.jpg
J3=$C/images/photo_3000x2000.jpg
PA=$C/pdf/text_20p.pdf
PB=$C/pdf/photos_4p.pdf
OCR=$C/images/ocr_text_300dpi.png
PNG=$C/images/alpha_2000x2000.png
MP4=$C/video/testsrc_10s_720p.mp4

# name | target (ratio ours/theirs) | our output | our command | their output | their command
PAIRS=(
"thumbnail 6000x4000 → 400px JPEG q75|0.8|$O/rc_thumb.jpg|$RC thumbnail $J6 $O/rc_thumb.jpg -o width=400 -o quality=75|$O/vips_thumb.jpg|vipsthumbnail $J6 -s 400 -o $O/vips_thumb.jpg[Q=75]"
"640x480 JPEG → PNG|1.0|$O/rc_small.png|$RC convert $J0 $O/rc_small.png|$O/vips_small.png|vips copy $J0 $O/vips_small.png"
"6000x4000 JPEG → PNG|1.0|$O/rc.png|$RC convert $J6 $O/rc.png|$O/vips.png|vips copy $J6 $O/vips.png"
"3000x2000 JPEG → WebP q75|1.0|$O/rc.webp|$RC convert $J3 $O/rc.webp -o quality=75|$O/vips.webp|vips copy $J3 $O/vips.webp[Q=75]"
"merge 20p text + 4p photo PDF|1.0|$O/rc_merge.pdf|$RC merge $O/rc_merge.pdf $PA $PB|$O/qpdf_merge.pdf|qpdf --empty --pages $PA $PB -- $O/qpdf_merge.pdf"
"OCR 300 dpi page → text|1.05|$O/rc_ocr.txt|$RC ocr $OCR $O/rc_ocr.txt|$O/tess.txt|tesseract $OCR $O/tess"
"video frame at 1 s → JPEG|1.05|$O/rc_vthumb.jpg|$RC thumbnail $MP4 $O/rc_vthumb.jpg -o timestamp=1 -o width=1280 -o quality=90|$O/vthumb.jpg|ffmpeg -nostdin -y -loglevel error -ss 1 -i $MP4 -frames:v 1 $O/vthumb.jpg"
"JPEG compress 3000x2000 q75|1.5|$O/rc_c3.jpg|$RC compress $J3 $O/rc_c3.jpg -o quality=75|$O/jo3/photo_3000x2000.jpg|jpegoptim -q -o --max=75 --strip-all -d $O/jo3 $J3"
"JPEG compress 640x480 q75|1.5|$O/rc_c0.jpg|$RC compress $J0 $O/rc_c0.jpg -o quality=75|$O/jo0/photo_640x480.jpg|jpegoptim -q -o --max=75 --strip-all -d $O/jo0 $J0"
"PNG compress lossless 2000x2000 alpha|0.5|$O/rc_ll.png|$RC compress $PNG $O/rc_ll.png|$O/optipng.png|optipng -quiet -o2 -clobber -out $O/optipng.png $PNG"
"PNG compress lossy 2000x2000 alpha|-|$O/rc_lossy.png|$RC compress $PNG $O/rc_lossy.png -o profile=lossy|$O/pngquant.png|pngquant --quality=65-90 --force --output $O/pngquant.png $PNG"
"compress 4p photo PDF (ebook)|0.5|$O/rc_compress.pdf|$RC compress $PB $O/rc_compress.pdf -o profile=web|$O/gs_ebook.pdf|gs -q -dNOPAUSE -dBATCH -dSAFER -sDEVICE=pdfwrite -dCompatibilityLevel=1.4 -dPDFSETTINGS=/ebook -sOutputFile=$O/gs_ebook.pdf $PB"
)

mkdir -p "$O/jo3" "$O/jo0"

# measure OUT_PREFIX CMD... → writes OUT_PREFIX.{wall,rss} (one line per run)
measure() {
  local prefix=$1; shift
  "$@" </dev/null >/dev/null 2>&1 || { echo "command failed: $*" >&2; "$@" </dev/null >&2 || true; exit 1; }
  : >"$prefix.wall"; : >"$prefix.rss"
  for _ in $(seq 1 "$RUNS"); do
    local t0 t1
    t0=$(date +%s%N)
    /usr/bin/time -f '%M' -o "$prefix.t" "$@" </dev/null >/dev/null 2>&1
    t1=$(date +%s%N)
    # Wall time in ms resolution (GNU time's %e has only 10 ms).
    awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f\n", (b - a) / 1e9 }' >>"$prefix.wall"
    cat "$prefix.t" >>"$prefix.rss"
  done
}

median() { sort -g "$1" | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
maxof() { sort -g "$1" | tail -1; }

echo "# RunConvert benchmark: $(date -u +%FT%TZ), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), $RUNS runs + 1 warm-up each"
echo
echo "| case | ours s | theirs s | ratio | target | ours MiB | theirs MiB | ours bytes | theirs bytes |"
echo "|---|---|---|---|---|---|---|---|---|"
declare -A THEIRS  # case → the tool's median wall seconds, for the API mode
for row in "${PAIRS[@]}"; do
  IFS='|' read -r name target out1 cmd1 out2 cmd2 <<<"$row"
  read -r -a a1 <<<"$cmd1"; read -r -a a2 <<<"$cmd2"
  measure "$O/m1" "${a1[@]}"; measure "$O/m2" "${a2[@]}"
  w1=$(median "$O/m1.wall"); w2=$(median "$O/m2.wall")
  THEIRS[$name]=$w2
  r1=$(( $(maxof "$O/m1.rss") / 1024 )); r2=$(( $(maxof "$O/m2.rss") / 1024 ))
  ratio=$(awk -v a="$w1" -v b="$w2" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }')
  ok=$(awk -v r="$ratio" -v t="$target" 'BEGIN { print (t == "-" ? "none set" : (r <= t ? "met" : "MISSED")) }')
  echo "| $name | $w1 | $w2 | $ratio | ${target/#[0-9]/≤ &} ($ok) | $r1 | $r2 | $(stat -c%s "$out1") | $(stat -c%s "$out2") |"
done

# Office → PDF: our server's LibreOffice kept warm, per document through the API, against
# a cold `soffice --convert-to` per document.
DOC=$O/letter.docx
cp "$C/images/ocr_text.expected.txt" "$O/letter.txt"
soffice --headless --convert-to docx --outdir "$O" "$O/letter.txt" >/dev/null 2>&1
DATA=$O/server-data
KEY=$("$RC" keys create --name bench --data-dir "$DATA" 2>/dev/null)
# --allow-private-networks: the API mode's jobs import the corpus from a loopback server.
"$RC" serve --listen 127.0.0.1:0 --data-dir "$DATA" --allow-private-networks >"$O/server.out" 2>/dev/null &
SERVER=$!
python3 -u -m http.server 0 --bind 127.0.0.1 --directory "$C" >"$O/files.out" 2>&1 &
FILES=$!
trap 'kill $SERVER $FILES 2>/dev/null; rm -rf "$O"' EXIT
for _ in $(seq 1 100); do grep -q "listening on" "$O/server.out" 2>/dev/null && break; sleep 0.1; done
API=$(sed -n 's/^RunConvert listening on \(http[^ ]*\).*/\1/p' "$O/server.out")
B64=$(base64 -w0 "$DOC")
office_job() {
  local id
  id=$(curl -s -X POST "$API/v2/process/jobs" -H "Authorization: Bearer $KEY" -d "{\"tasks\":{\"i\":{\"operation\":\"import/base64\",\"file\":\"$B64\",\"filename\":\"letter.docx\"},\"c\":{\"operation\":\"convert\",\"input\":\"i\",\"output_format\":\"pdf\"}}}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
  curl -s "$API/v2/process/jobs/$id/wait?timeout=60" -H "Authorization: Bearer $KEY" | python3 -c 'import json,sys; j=json.load(sys.stdin); sys.exit(0 if j["status"]=="completed" else 1)'
}
office_job  # warm-up: starts LibreOffice
: >"$O/warm.wall"; : >"$O/cold.wall"
for _ in $(seq 1 "$RUNS"); do
  t0=$(date +%s%N); office_job; t1=$(date +%s%N)
  awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f\n", (b - a) / 1e9 }' >>"$O/warm.wall"
  t0=$(date +%s%N); soffice --headless --convert-to pdf --outdir "$O/cold" "$DOC" >/dev/null 2>&1; t1=$(date +%s%N)
  awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f\n", (b - a) / 1e9 }' >>"$O/cold.wall"
done
w=$(median "$O/warm.wall"); c=$(median "$O/cold.wall")
echo
echo "Office → PDF per document: ours (LibreOffice kept warm, whole job through the API) $w s, cold soffice --convert-to $c s: ratio $(awk -v a="$w" -v b="$c" 'BEGIN { printf "%.2f", a / b }')"

# API mode: the same cases as whole jobs (import/url from the loopback corpus server, the
# operation, export/url, the result downloaded), against the tools' medians above.
for _ in $(seq 1 100); do grep -q "Serving HTTP" "$O/files.out" 2>/dev/null && break; sleep 0.1; done
CORPUS_URL=$(sed -n 's/.*port \([0-9]*\).*/http:\/\/127.0.0.1:\1/p' "$O/files.out" | head -1)
job() { # job IMPORTS OPERATION_TASK: the tasks i (imports), o (the operation), e (export)
  printf '{"tasks":{%s,"o":%s,"e":{"operation":"export/url","input":"o"}}}' "$1" "$2"
}
imp() { printf '"%s":{"operation":"import/url","url":"{corpus}/%s"}' "$1" "$2"; }
API_CASES=(
"thumbnail 6000x4000 → 400px JPEG q75|0.8|${THEIRS[thumbnail 6000x4000 → 400px JPEG q75]}|$(job "$(imp i images/photo_6000x4000.jpg)" '{"operation":"thumbnail","input":"i","output_format":"jpg","options":{"width":400,"quality":75}}')"
"640x480 JPEG → PNG|1.0|${THEIRS[640x480 JPEG → PNG]}|$(job "$(imp i images/photo_640x480.jpg)" '{"operation":"convert","input":"i","output_format":"png"}')"
"6000x4000 JPEG → PNG|1.0|${THEIRS[6000x4000 JPEG → PNG]}|$(job "$(imp i images/photo_6000x4000.jpg)" '{"operation":"convert","input":"i","output_format":"png"}')"
"3000x2000 JPEG → WebP q75|1.0|${THEIRS[3000x2000 JPEG → WebP q75]}|$(job "$(imp i images/photo_3000x2000.jpg)" '{"operation":"convert","input":"i","output_format":"webp","options":{"quality":75}}')"
"merge 20p text + 4p photo PDF|1.0|${THEIRS[merge 20p text + 4p photo PDF]}|$(job "$(imp a pdf/text_20p.pdf),$(imp b pdf/photos_4p.pdf)" '{"operation":"merge","input":["a","b"],"output_format":"pdf"}')"
)
echo
python3 tests/bench/api.py "$API" "$KEY" "$CORPUS_URL" "$RUNS" "${API_CASES[@]}"

# Sizes the targets speak of.
IM=$O/im.png
convert "$J6" "$IM"
in=$(stat -c%s "$PB"); ours=$(stat -c%s "$O/rc_compress.pdf"); gs=$(stat -c%s "$O/gs_ebook.pdf")
echo
echo "PNG size: ours $(stat -c%s "$O/rc.png") bytes, ImageMagick $(stat -c%s "$IM") bytes ($( [ "$(stat -c%s "$O/rc.png")" -le "$(stat -c%s "$IM")" ] && echo "met: no larger" || echo "MISSED: larger"))"
awk -v i="$in" -v o="$ours" -v g="$gs" 'BEGIN { printf "PDF compress: %d → ours %d (%.1f%% removed), Ghostscript /ebook %d (%.1f%% removed): %s\n", i, o, 100*(1-o/i), g, 100*(1-g/i), (o <= g ? "met" : "MISSED") }'
# JPEG compress: bytes against jpegoptim's, and PSNR against the original of both.
psnr() { compare -metric PSNR "$1" "$2" null: 2>&1 | awk '{print $1}'; }
for pair in "$J3 $O/rc_c3.jpg $O/jo3/photo_3000x2000.jpg" "$J0 $O/rc_c0.jpg $O/jo0/photo_640x480.jpg"; do
  read -r src ours theirs <<<"$pair"
  awk -v n="$(basename "$src")" -v i="$(stat -c%s "$src")" -v o="$(stat -c%s "$ours")" -v t="$(stat -c%s "$theirs")" \
      -v po="$(psnr "$src" "$ours")" -v pt="$(psnr "$src" "$theirs")" 'BEGIN {
    q = (po == "inf" || pt == "inf") ? (po == pt || po == "inf") : (po + 0 >= pt - 0.5)
    printf "JPEG compress %s (q75): %d → ours %d (PSNR %s dB), jpegoptim --max=75 --strip-all %d (PSNR %s dB): bytes %.2f × (≤ 0.95: %s), PSNR within 0.5 dB: %s\n",
      n, i, o, po, t, pt, o / t, (o <= 0.95 * t ? "met" : "MISSED"), (q ? "met" : "MISSED") }'
done
awk -v o="$(stat -c%s "$O/rc_ll.png")" -v t="$(stat -c%s "$O/optipng.png")" -v same="$(compare -metric AE "$PNG" "$O/rc_ll.png" null: 2>&1)" 'BEGIN {
  printf "PNG lossless: ours %d bytes (%s pixels differ), optipng -o2 %d: %.2f × (≤ 1.0: %s)\n", o, same, t, o / t, (o <= t ? "met" : "MISSED") }'
awk -v o="$(stat -c%s "$O/rc_lossy.png")" -v t="$(stat -c%s "$O/pngquant.png")" -v po="$(psnr "$PNG" "$O/rc_lossy.png")" -v pt="$(psnr "$PNG" "$O/pngquant.png")" 'BEGIN {
  printf "PNG lossy: ours %d bytes (PSNR %s dB), pngquant --quality=65-90 %d (PSNR %s dB): %.2f × (≤ 1.1: %s)\n", o, po, t, pt, o / t, (o <= 1.1 * t ? "met" : "MISSED") }'
echo "Merged pages: ours $(qpdf --show-npages "$O/rc_merge.pdf"), qpdf $(qpdf --show-npages "$O/qpdf_merge.pdf")"
