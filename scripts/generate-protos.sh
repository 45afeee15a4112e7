#!/usr/bin/env bash
# Regenerates the Swift code for every .proto under Protos/.
#   messages      -> Sources/EtcdProto/Generated   (protoc-gen-swift)
#   gRPC services -> Sources/EtcdGRPC/Generated    (protoc-gen-grpc-swift-2;
#                    a module of its own that imports EtcdProto)
# The plugins are built from scripts/protoc-plugins into the git-ignored
# .build-tools folder on first use. Needs protoc (Debian: protobuf-compiler).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

command -v protoc >/dev/null || { echo "protoc missing: apt-get install -y protobuf-compiler" >&2; exit 1; }

tools="$root/.build-tools/release"
if [ ! -x "$tools/protoc-gen-swift" ] || [ ! -x "$tools/protoc-gen-grpc-swift-2" ]; then
  (cd scripts/protoc-plugins &&
   swift build -c release --scratch-path "$root/.build-tools" --product protoc-gen-swift &&
   swift build -c release --scratch-path "$root/.build-tools" --product protoc-gen-grpc-swift-2)
fi

protos=$(cd Protos && find . -name '*.proto' | sed 's|^\./||' | sort)
with_services=$(cd Protos && grep -l '^service ' $protos | sort)

msg_out=Sources/EtcdProto/Generated
grpc_out=Sources/EtcdGRPC/Generated
rm -rf "$msg_out" "$grpc_out"
mkdir -p "$msg_out" "$grpc_out"

(cd Protos && protoc -I . \
  --plugin=protoc-gen-swift="$tools/protoc-gen-swift" \
  --swift_out="$root/$msg_out" \
  --swift_opt=Visibility=Public,FileNaming=PathToUnderscores \
  $protos)

(cd Protos && protoc -I . \
  --plugin=protoc-gen-grpc-swift-2="$tools/protoc-gen-grpc-swift-2" \
  --grpc-swift-2_out="$root/$grpc_out" \
  --grpc-swift-2_opt=Visibility=Public,Server=true,Client=true,FileNaming=PathToUnderscores,ExtraModuleImports=EtcdProto \
  $with_services)

echo "generated: $(ls "$msg_out" | wc -l) message files, $(ls "$grpc_out" | wc -l) service files"
