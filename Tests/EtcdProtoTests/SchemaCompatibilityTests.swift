import Foundation
import SwiftProtobuf
import Testing

/// Our .proto files against etcd's: compile both to descriptor sets with
/// protoc and require that everything in etcd's schema exists, identically,
/// in ours. The reference is etcd 3.4 as Debian ships it
/// (golang-etcd-server-dev); the 3.5/3.6 additions are checked by name below.
@Suite struct SchemaCompatibilityTests {
    @Test func oursIsASupersetOfEtcds() throws {
        let reference = try EtcdReferenceSchema.load()
        let ours = try OurSchema.load()
        let differences = ours.differences(from: reference)
        for difference in differences { print("schema difference: \(difference)") }
        #expect(differences.isEmpty, "our schema differs from etcd's in \(differences.count) places:\n\(differences.joined(separator: "\n"))")
        // A reference that compiled to less would make this pass vacuously:
        // every etcd package must be in it, with JSON names filled in.
        #expect(reference.services.count == 8)
        for message in [".etcdserverpb.RangeRequest", ".etcdserverpb.InternalRaftRequest", ".etcdserverpb.Request",
                        ".mvccpb.KeyValue", ".authpb.Role", ".leasepb.Lease", ".raftpb.Message", ".walpb.Record",
                        ".snappb.snapshot", ".v3lockpb.LockRequest", ".v3electionpb.LeaderKey"] {
            #expect(reference.messages[message]?.isEmpty == false, "etcd's schema should define \(message)")
        }
        #expect(reference.messages[".etcdserverpb.RangeRequest"]?["range_end"]?.jsonName == "rangeEnd")
    }

    @Test func etcd36AdditionsArePresent() throws {
        let ours = try OurSchema.load()
        let expectations: [(message: String, field: String, number: Int32)] = [
            (".etcdserverpb.HashKVResponse", "hash_revision", 4),
            (".etcdserverpb.SnapshotResponse", "version", 4),
            (".etcdserverpb.StatusResponse", "storageVersion", 11),
            (".etcdserverpb.StatusResponse", "dbSizeQuota", 12),
            (".etcdserverpb.StatusResponse", "downgradeInfo", 13),
            (".etcdserverpb.DowngradeInfo", "enabled", 1),
            (".etcdserverpb.DowngradeInfo", "targetVersion", 2),
            (".etcdserverpb.AuthUserAddRequest", "hashedPassword", 4),
            (".etcdserverpb.AuthUserChangePasswordRequest", "hashedPassword", 3),
            (".etcdserverpb.AuthStatusResponse", "enabled", 2),
            (".etcdserverpb.AuthStatusResponse", "authRevision", 3),
            (".etcdserverpb.DowngradeRequest", "action", 1),
            (".etcdserverpb.DowngradeRequest", "version", 2),
            (".etcdserverpb.DowngradeResponse", "version", 2),
            (".etcdserverpb.MemberListRequest", "linearizable", 1),
            (".etcdserverpb.InternalRaftRequest", "auth_status", 1013),
            (".etcdserverpb.InternalRaftRequest", "cluster_version_set", 1300),
            (".etcdserverpb.InternalRaftRequest", "cluster_member_attr_set", 1301),
            (".etcdserverpb.InternalRaftRequest", "downgrade_info_set", 1302),
            (".membershippb.Member", "raft_attributes", 2),
            (".membershippb.ClusterMemberAttrSetRequest", "member_ID", 1),
            (".walpb.Snapshot", "conf_state", 3),
            (".raftpb.Message", "vote", 13),
            (".raftpb.Message", "responses", 14),
        ]
        for expected in expectations {
            let field = ours.messages[expected.message]?[expected.field]
            #expect(field?.number == expected.number, "\(expected.message).\(expected.field) should be field \(expected.number)")
        }
        #expect(ours.services[".etcdserverpb.Auth"]?["AuthStatus"] != nil)
        #expect(ours.services[".etcdserverpb.Maintenance"]?["Downgrade"] != nil)
        #expect(ours.enums[".etcdserverpb.DowngradeRequest.DowngradeAction"] == ["VALIDATE": 0, "ENABLE": 1, "CANCEL": 2])
        #expect(ours.enums[".raftpb.MessageType"]?["MsgForgetLeader"] == 23)
        #expect(ours.services[".grpc.health.v1.Health"]?["Watch"]?.serverStreaming == true)
    }

    // The checker itself must catch each kind of difference.

    @Test func checkerReportsAChangedFieldNumber() throws {
        let reference = try EtcdReferenceSchema.load()
        var ours = try OurSchema.load()
        ours.messages[".etcdserverpb.RangeRequest"]?["limit"]?.number = 33
        let differences = ours.differences(from: reference)
        #expect(differences.count == 1)
        #expect(differences.first?.hasPrefix("field .etcdserverpb.RangeRequest.limit") == true)
    }

    @Test func checkerReportsStreamingTypeLabelAndEnumChanges() throws {
        let reference = try EtcdReferenceSchema.load()
        var ours = try OurSchema.load()
        ours.services[".etcdserverpb.Watch"]?["Watch"]?.clientStreaming = false
        ours.messages[".mvccpb.KeyValue"]?["lease"]?.type = .uint64
        ours.messages[".etcdserverpb.TxnRequest"]?["compare"]?.label = .optional
        ours.enums[".mvccpb.Event.EventType"]?["DELETE"] = 2
        ours.messages[".etcdserverpb.Compare"]?["lease"]?.oneof = nil
        let differences = ours.differences(from: reference)
        #expect(differences.count == 5, "\(differences)")
        #expect(differences.contains { $0.hasPrefix("method .etcdserverpb.Watch.Watch") })
        #expect(differences.contains { $0.hasPrefix("field .mvccpb.KeyValue.lease") })
        #expect(differences.contains { $0.hasPrefix("field .etcdserverpb.TxnRequest.compare") })
        #expect(differences.contains { $0.hasPrefix("enum value .mvccpb.Event.EventType.DELETE") })
        #expect(differences.contains { $0.hasPrefix("field .etcdserverpb.Compare.lease") })
    }

    @Test func checkerReportsMissingPieces() throws {
        let reference = try EtcdReferenceSchema.load()
        var ours = try OurSchema.load()
        ours.services[".v3lockpb.Lock"]?["Unlock"] = nil
        ours.messages[".raftpb.HardState"] = nil
        ours.messages[".authpb.User"]?["roles"] = nil
        ours.enums[".etcdserverpb.AlarmType"]?["CORRUPT"] = nil
        let differences = ours.differences(from: reference)
        #expect(Set(differences) == [
            "missing method .v3lockpb.Lock.Unlock",
            "missing message .raftpb.HardState",
            "missing field .authpb.User.roles",
            "missing enum value .etcdserverpb.AlarmType.CORRUPT",
        ])
    }
}

// MARK: - Compiling the schemas

enum SchemaLoadError: Error, CustomStringConvertible {
    case missing(String)
    case protocFailed(String)

    var description: String {
        switch self {
        case let .missing(what): return "missing \(what) (README: the test command installs it)"
        case let .protocFailed(output): return "protoc failed: \(output)"
        }
    }
}

enum OurSchema {
    static let repositoryRoot = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    static func load() throws -> SchemaModel {
        let protos = repositoryRoot.appendingPathComponent("Protos")
        let files = try FileManager.default.subpathsOfDirectory(atPath: protos.path)
            .filter { $0.hasSuffix(".proto") }.sorted()
        guard !files.isEmpty else { throw SchemaLoadError.missing("Protos/*.proto") }
        return SchemaModel(try Protoc.descriptorSet(includes: [protos.path], files: files))
    }
}

/// etcd 3.4's own .proto files from Debian's golang-etcd-server-dev, with
/// the gogoproto and google.api imports they need.
enum EtcdReferenceSchema {
    static let gocode = ProcessInfo.processInfo.environment["ETCD_GOCODE"] ?? "/usr/share/gocode/src"

    static func load() throws -> SchemaModel {
        let etcd = gocode + "/go.etcd.io/etcd"
        guard FileManager.default.fileExists(atPath: etcd + "/etcdserver/etcdserverpb/rpc.proto") else {
            throw SchemaLoadError.missing("etcd's .proto files in \(etcd) (Debian package golang-etcd-server-dev)")
        }
        let includes = [
            gocode + "/go.etcd.io",
            gocode + "/github.com/gogo/protobuf",
            gocode + "/github.com/grpc-ecosystem/grpc-gateway/third_party/googleapis",
            "/usr/include",
        ]
        let files = [
            "etcd/etcdserver/etcdserverpb/rpc.proto",
            "etcd/etcdserver/etcdserverpb/etcdserver.proto",
            "etcd/mvcc/mvccpb/kv.proto",
            "etcd/auth/authpb/auth.proto",
            "etcd/lease/leasepb/lease.proto",
            "etcd/raft/raftpb/raft.proto",
            "etcd/wal/walpb/record.proto",
            "etcd/etcdserver/api/snap/snappb/snap.proto",
            "etcd/etcdserver/api/v3lock/v3lockpb/v3lock.proto",
            "etcd/etcdserver/api/v3election/v3electionpb/v3election.proto",
        ]
        var set = try Protoc.descriptorSet(includes: includes, files: files)
        // raft_internal.proto imports its neighbours by bare name, so it is
        // compiled on its own with its folder on the include path.
        let internalSet = try Protoc.descriptorSet(
            includes: [etcd + "/etcdserver/etcdserverpb"] + includes,
            files: ["raft_internal.proto"]
        )
        set.file += internalSet.file.filter { $0.name == "raft_internal.proto" }
        return SchemaModel(set)
    }
}

enum Protoc {
    static func descriptorSet(includes: [String], files: [String]) throws -> Google_Protobuf_FileDescriptorSet {
        let output = FileManager.default.temporaryDirectory
            .appendingPathComponent("schema-\(UInt64.random(in: 0...UInt64.max)).pb")
        defer { try? FileManager.default.removeItem(at: output) }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["protoc"] + includes.map { "-I" + $0 } + ["--descriptor_set_out=" + output.path] + files
        let stderr = Pipe()
        process.standardError = stderr
        do { try process.run() } catch { throw SchemaLoadError.missing("protoc (Debian package protobuf-compiler)") }
        let errorText = String(decoding: stderr.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            if process.terminationStatus == 127 { throw SchemaLoadError.missing("protoc (Debian package protobuf-compiler)") }
            throw SchemaLoadError.protocFailed(errorText)
        }
        return try Google_Protobuf_FileDescriptorSet(serializedBytes: Data(contentsOf: output))
    }
}
