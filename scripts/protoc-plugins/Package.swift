// swift-tools-version:6.1
// Builds the protoc plugins used by scripts/generate-protos.sh.
// Nothing here ships; the build output lives in the git-ignored .build-tools folder.
import PackageDescription

let package = Package(
    name: "protoc-plugins",
    dependencies: [
        .package(url: "https://github.com/apple/swift-protobuf.git", exact: "1.39.0"),
        .package(url: "https://github.com/grpc/grpc-swift-protobuf.git", exact: "2.4.1"),
    ],
    targets: []
)
