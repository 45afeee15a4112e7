// swift-tools-version:6.1
//
// etcd in Swift. The target list below *is* the architecture: dependency
// arrows point one way, from the executables down to the pure cores.
//
//   etcd, etcdctl, etcdutl, etcd-bench      thin executables
//   EtcdAPI            gRPC services, HTTP endpoints        -> EtcdServer, EtcdGRPC, GRPCWire
//   GRPCWire           gRPC over swift-nio-http2 frames      -> NIO, SwiftProtobuf
//   EtcdClient         Swift client library                  -> GRPCWire, EtcdProto
//   EtcdServer         the member (raft loop, apply, ...)    -> everything below
//   MVCC, Lease, Auth  pure state over the backend           -> Backend, EtcdProto
//   WAL                write-ahead log + snapshot files      -> EtcdProto, Checksum
//   Backend            LMDB buckets, batched transactions    -> CLMDB, Checksum
//   Checksum           CRC32C shared by WAL, Backend, MVCC
//   Raft               pure consensus state machine          -> (stdlib only)
//   Locks              the project's Mutex (pthread under TSan) -> Synchronization
//   EtcdGRPC           generated gRPC service stubs          -> EtcdProto, GRPCCore
//   EtcdProto          generated protobuf messages           -> SwiftProtobuf
//
// The pure cores (Raft, MVCC, Lease, Auth) import no NIO, no gRPC and take
// time and randomness as parameters.
import PackageDescription

let package = Package(
    name: "etcd-swift",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "etcd", targets: ["etcd"]),
        .executable(name: "etcdctl", targets: ["etcdctl"]),
        .executable(name: "etcdutl", targets: ["etcdutl"]),
        .executable(name: "etcd-bench", targets: ["etcd-bench"]),
        .executable(name: "etcd-sim", targets: ["etcd-sim"]),
        .library(name: "EtcdClient", targets: ["EtcdClient"]),
        .library(name: "EtcdServer", targets: ["EtcdServer"]),
        .library(name: "Raft", targets: ["Raft"]),
        .library(name: "EtcdProto", targets: ["EtcdProto", "EtcdGRPC"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-protobuf.git", from: "1.39.0"),
        .package(url: "https://github.com/grpc/grpc-swift-2.git", from: "2.4.3"),
        .package(url: "https://github.com/grpc/grpc-swift-protobuf.git", from: "2.4.1"),
        .package(url: "https://github.com/grpc/grpc-swift-nio-transport.git", from: "2.9.2"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-nio-http2.git", from: "1.46.0"),
        .package(url: "https://github.com/apple/swift-crypto.git", "3.12.3"..<"5.0.0"),
        .package(url: "https://github.com/jpsim/Yams.git", from: "6.2.2"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-certificates.git", from: "1.21.1"),
        .package(url: "https://github.com/apple/swift-asn1.git", from: "1.7.4"),
        .package(url: "https://github.com/hummingbird-project/hummingbird-auth.git", from: "2.5.0"),
        .package(url: "https://github.com/vapor/jwt-kit.git", from: "5.7.1"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
    ],
    targets: [
        // MARK: generated code
        .target(
            name: "EtcdProto",
            dependencies: [.product(name: "SwiftProtobuf", package: "swift-protobuf")]
        ),
        .target(
            name: "EtcdGRPC",
            dependencies: [
                "EtcdProto",
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "GRPCProtobuf", package: "grpc-swift-protobuf"),
            ]
        ),

        // MARK: transport support
        .target(
            name: "HTTP2PingResponder",
            dependencies: [
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP2", package: "swift-nio-http2"),
            ]
        ),

        // MARK: pure cores and storage
        .target(name: "Raft"),
        // `Mutex` for every module: Synchronization's, or one ThreadSanitizer
        // can follow when built with -DTSAN_LOCKS (scripts/tsan.sh).
        .target(name: "Locks"),
        .systemLibrary(
            name: "CLMDB",
            pkgConfig: "lmdb",
            providers: [.apt(["liblmdb-dev"])]
        ),
        .target(name: "Checksum"),
        // bbolt's on-disk format (etcd's snapshot files): reader and streaming writer, no dependencies.
        .target(name: "Bbolt", dependencies: ["Checksum"]),
        .target(name: "Backend", dependencies: ["CLMDB", "Checksum", "Locks", "Bbolt"]),
        .target(name: "WAL", dependencies: ["EtcdProto", "Checksum"]),
        .target(name: "MVCC", dependencies: ["Backend", "EtcdProto", "Checksum"]),
        .target(name: "Lease", dependencies: ["Backend", "EtcdProto", "Locks"]),
        // bcrypt comes from hummingbird-auth's HummingbirdBcrypt product, which
        // wraps a C implementation and pulls in no NIO.
        .target(
            name: "Auth",
            dependencies: [
                "Backend", "EtcdProto", "Locks",
                .product(name: "HummingbirdBcrypt", package: "hummingbird-auth"),
                .product(name: "JWTKit", package: "jwt-kit"),
            ]
        ),
        // Linearizability and watch-guarantee checkers for tests and simulations.
        .target(name: "Checkers"),
        // Tables and byte sizes printed as etcd's Go tools print them (etcdctl, etcdutl).
        .target(name: "CLIText", dependencies: ["Locks"]),
        // An in-memory file system that tracks what is fsynced (crash tests
        // and the simulation's disk).
        .target(name: "SimulatedDisk", dependencies: ["WAL", "Locks"]),
        // The deterministic cluster simulation: real members under a seeded
        // scheduler with simulated time, network and disk.
        .target(
            name: "Simulation",
            dependencies: [
                "EtcdServer", "SimulatedDisk", "Checkers", "EtcdProto", "PeerTransport", "WAL", "MVCC", "Raft", "Backend", "Bbolt", "Auth",
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // TLS for every listener and dialer: settings as etcd names them,
        // certificates re-read when their files change, etcd's post-handshake
        // checks (allowed CN / hostname, CRL), auto-TLS certificates.
        .target(
            name: "TransportSecurity",
            dependencies: [
                "Locks",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOTLS", package: "swift-nio"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .target(
            name: "PeerTransport",
            dependencies: [
                "Checksum", "Locks", "TransportSecurity",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ]
        ),

        // Prometheus metrics with etcd's names (the registry, every metric the
        // member exports, /proc process metrics). Not imported by the pure cores.
        .target(
            name: "EtcdMetrics",
            dependencies: [
                "Locks",
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
            ]
        ),

        // MARK: the member, its API and the client
        .target(
            name: "EtcdServer",
            dependencies: [
                "Raft", "WAL", "Backend", "Bbolt", "MVCC", "Lease", "Auth", "EtcdProto", "PeerTransport", "Locks", "TransportSecurity", "EtcdMetrics",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "Crypto", package: "swift-crypto"),
            ]
        ),
        .target(
            name: "GRPCWire",
            dependencies: [
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOHTTP2", package: "swift-nio-http2"),
                .product(name: "NIOHPACK", package: "swift-nio-http2"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
            ]
        ),
        .target(
            name: "EtcdAPI",
            dependencies: [
                "EtcdServer", "MVCC", "Lease", "Auth", "EtcdProto", "EtcdGRPC", "HTTP2PingResponder", "GRPCWire", "Locks", "TransportSecurity", "EtcdMetrics",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOHPACK", package: "swift-nio-http2"),
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "GRPCNIOTransportHTTP2", package: "grpc-swift-nio-transport"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .target(
            name: "EtcdClient",
            dependencies: [
                "EtcdProto", "HTTP2PingResponder", "Locks", "GRPCWire",
                // RPCError's codes are in the public error type (EtcdClientError);
                // calls and streams go over GRPCWire, not grpc-swift's client.
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOTLS", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
            ]
        ),

        // MARK: executables (argument parsing and wiring only)
        .executableTarget(
            name: "etcd",
            dependencies: [
                "EtcdAPI", "EtcdServer", "TransportSecurity", "Locks",
                .product(name: "Yams", package: "Yams"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // etcdctl parses its command line as the Go etcdctl's cobra does
        // (same errors, usage text and exit codes), so no ArgumentParser.
        .executableTarget(
            name: "etcdctl",
            dependencies: [
                "EtcdClient", "EtcdProto", "Locks", "Bbolt", "CLIText",
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ]
        ),
        .executableTarget(
            name: "etcd-sim",
            dependencies: ["Simulation", .product(name: "ArgumentParser", package: "swift-argument-parser")]
        ),
        .executableTarget(
            name: "etcdutl",
            dependencies: [
                "WAL", "Backend", "MVCC", "Bbolt", "EtcdServer", "CLIText",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .executableTarget(
            name: "etcd-bench",
            dependencies: [
                "EtcdClient", "Raft", "WAL", "Backend", "MVCC", "EtcdProto", "EtcdGRPC", "HTTP2PingResponder", "GRPCWire", "Locks",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "GRPCNIOTransportHTTP2", package: "grpc-swift-nio-transport"),
            ]
        ),

        // MARK: tests
        .testTarget(
            name: "EtcdProtoTests",
            dependencies: ["EtcdProto", "EtcdGRPC", .product(name: "SwiftProtobuf", package: "swift-protobuf")]
        ),
        .testTarget(name: "RaftTests", dependencies: ["Raft"]),
        .testTarget(name: "ChecksumTests", dependencies: ["Checksum"]),
        .testTarget(name: "BboltTests", dependencies: ["Bbolt", "Checksum", .product(name: "Crypto", package: "swift-crypto")]),
        .testTarget(name: "WALTests", dependencies: ["WAL", "EtcdProto", "SimulatedDisk", "Locks"]),
        .testTarget(name: "BackendTests", dependencies: ["Backend", "Bbolt", "Locks"]),
        .testTarget(
            name: "MVCCTests",
            dependencies: ["MVCC", "Backend", "EtcdProto", .product(name: "SwiftProtobuf", package: "swift-protobuf")]
        ),
        // The client and our etcdctl against the real etcd 3.4 (Debian's
        // etcd-server), and our etcdctl's output against the Go etcdctl's.
        // (And against a GRPCWire server, for what its streams carry.)
        .testTarget(
            name: "EtcdClientTests",
            dependencies: ["EtcdClient", "EtcdProto", "Locks", "GRPCWire", .product(name: "NIOCore", package: "swift-nio"),
                           .product(name: "SwiftProtobuf", package: "swift-protobuf")]
        ),
        .testTarget(name: "EtcdctlTests", dependencies: ["EtcdClient", "CLIText"]),
        .testTarget(
            name: "LeaseTests",
            dependencies: ["Lease", "Backend", "EtcdProto", .product(name: "SwiftProtobuf", package: "swift-protobuf")]
        ),
        .testTarget(
            name: "AuthTests",
            dependencies: ["Auth", "Backend", "EtcdProto", .product(name: "SwiftProtobuf", package: "swift-protobuf")]
        ),
        .testTarget(name: "EtcdServerTests", dependencies: ["EtcdServer", "EtcdProto", "MVCC", "Locks", "Backend", "Bbolt", "Auth"]),
        // Several members in one process over loopback sockets.
        .testTarget(name: "ClusterTests", dependencies: ["EtcdServer", "EtcdProto", "Auth"]),
        .testTarget(name: "CheckersTests", dependencies: ["Checkers"]),
        .testTarget(
            name: "TransportSecurityTests",
            dependencies: ["TransportSecurity", .product(name: "NIOSSL", package: "swift-nio-ssl")]
        ),
        .testTarget(name: "SimulationTests", dependencies: ["Simulation", "Checkers"]),
        .testTarget(
            name: "PeerTransportTests",
            dependencies: ["PeerTransport", "Checksum", "Locks", .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOPosix", package: "swift-nio")]
        ),
        // Spawns the built `etcd`; drives it with Debian's Go etcdctl and
        // compares it with Debian's real etcd.
        .testTarget(
            name: "E2ETests",
            dependencies: [
                "EtcdGRPC", "EtcdProto", "HTTP2PingResponder", "Checkers", "Raft", "GRPCWire", "Locks",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "GRPCNIOTransportHTTP2", package: "grpc-swift-nio-transport"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
            ],
            // The Python client scripts PythonClientTests runs.
            exclude: ["Python"]
        ),
        .testTarget(
            name: "GRPCWireTests",
            dependencies: [
                "GRPCWire", "EtcdGRPC", "EtcdProto", "Locks",
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP2", package: "swift-nio-http2"),
                .product(name: "NIOHPACK", package: "swift-nio-http2"),
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "GRPCNIOTransportHTTP2", package: "grpc-swift-nio-transport"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "NIOCore", package: "swift-nio"),
            ]
        ),
        .testTarget(
            name: "EtcdAPITests",
            dependencies: [
                "EtcdAPI", "EtcdServer", "EtcdGRPC", "EtcdProto", "HTTP2PingResponder", "Locks", "Bbolt",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "GRPCNIOTransportHTTP2", package: "grpc-swift-nio-transport"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
            ]
        ),
    ]
)
