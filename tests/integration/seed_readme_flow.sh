#!/usr/bin/env bash
# The seed README's curl examples, in order and as written. Run by tests/integration/support.py
# with BASE and ADMIN_TOKEN set and ref.mp3 in the working directory.
set -euo pipefail

USER_ID=$(curl -sS -X POST "$BASE/admin/users" \
  -H "Authorization: Bearer $ADMIN_TOKEN" \
  | python -c "import sys,json; print(json.load(sys.stdin)['user_id'])")

echo "USER_ID=$USER_ID"

INVITE_CODE=$(curl -sS -X POST "$BASE/admin/users/$USER_ID/invites?expires_hours=24" \
  -H "Authorization: Bearer $ADMIN_TOKEN" \
  | python -c "import sys,json; print(json.load(sys.stdin)['invite_code'])")

echo "INVITE_CODE=$INVITE_CODE"

API_KEY=$(curl -sS -X POST "$BASE/auth/exchange-invite" \
  -H "Content-Type: application/json" \
  -d "{\"invite_code\":\"$INVITE_CODE\"}" \
  | python -c "import sys,json; print(json.load(sys.stdin)['api_key'])")

echo "API_KEY=$API_KEY"

VOICE_ID=$(curl -sS -X POST "$BASE/clonevoice" \
  -H "Authorization: Bearer $API_KEY" \
  -F "name=Geoff" \
  -F "language=English" \
  -F "transcript=The quick, brown fox jumped over the lazy dog" \
  -F "file=@./ref.mp3" \
  | python -c "import sys,json; print(json.load(sys.stdin)['voice_id'])")

echo "VOICE_ID=$VOICE_ID"

curl -sS -X POST "$BASE/designvoice" \
  -H "Authorization: Bearer $API_KEY" \
  -H "Content-Type: application/json" \
  -d '{
    "name": "warm_narrator",
    "language": "English",
    "description": "Warm, calm narrator voice. Slightly husky. Friendly.",
  }' | python -m json.tool > design.json || true

curl -sS "$BASE/voices" -H "Authorization: Bearer $API_KEY" | python -m json.tool > voices.json
curl -sS "$BASE/voices/$VOICE_ID" -H "Authorization: Bearer $API_KEY" | python -m json.tool > voice.json

curl -sS -L "$BASE/voices/$VOICE_ID/sample" \
  -H "Authorization: Bearer $API_KEY" \
  -o voice_sample.wav

curl -sS -X POST "$BASE/tts" \
  -H "Authorization: Bearer $API_KEY" \
  -H "Content-Type: application/json" \
  -D tts_headers.txt \
  -o out.wav \
  -d "{\"text\":\"Hello from the TTS server.\",\"voice_id\":$VOICE_ID,\"store\":false,\"language\":\"English\",\"format\":\"wav\"}"

cat tts_headers.txt | sed -n 's/^X-//p'
file out.wav

curl -sS -X POST "$BASE/batchtts" \
  -H "Authorization: Bearer $API_KEY" \
  -H "Content-Type: application/json" \
  -D batch_headers.txt \
  -o batch.zip \
  -d "{\"texts\":[\"First line.\",\"Second line.\",\"Third line.\"],\"voice_id\":$VOICE_ID,\"store\":false,\"language\":\"English\",\"format\":\"wav\"}"

cat batch_headers.txt | sed -n 's/^X-//p'
unzip -l batch.zip
unzip -p batch.zip manifest.json | python -m json.tool

GENERATION_ID=$(curl -sS -X POST "$BASE/tts" \
  -H "Authorization: Bearer $API_KEY" \
  -H "Content-Type: application/json" \
  -D stored_headers.txt -o kept.wav \
  -d "{\"text\":\"Keep this one.\",\"voice_id\":$VOICE_ID,\"store\":true}" \
  && sed -n 's/^x-generation-id: *//ip' stored_headers.txt | tr -d '\r')

curl -sS -L "$BASE/getstored/$GENERATION_ID" \
  -H "Authorization: Bearer $API_KEY" \
  -o stored.wav

curl -sS "$BASE/usage" -H "Authorization: Bearer $API_KEY" | python -m json.tool > usage.json
