import EtcdGRPC
import EtcdProto
import Foundation
import SwiftProtobuf
import Testing

/// The generated code speaks etcd's wire and JSON formats.
@Suite struct GeneratedCodeTests {
    @Test func putRequestWireBytesMatchEtcdEncoding() throws {
        var put = Etcdserverpb_PutRequest()
        put.key = Data("foo".utf8)
        put.value = Data("bar".utf8)
        put.lease = 7
        let bytes = [UInt8](try put.serializedBytes() as Data)
        // field 1 (key, bytes) "foo", field 2 (value, bytes) "bar", field 3 (lease, varint) 7
        #expect(bytes == [0x0A, 3, 0x66, 0x6F, 0x6F, 0x12, 3, 0x62, 0x61, 0x72, 0x18, 7])
        let decoded = try Etcdserverpb_PutRequest(serializedBytes: bytes)
        #expect(decoded == put)
    }

    @Test func proto2RaftEntryWritesZeroFieldsItWasGiven() throws {
        var entry = Raftpb_Entry()
        entry.term = 0
        entry.index = 5
        entry.type = .entryNormal
        let bytes = [UInt8](try entry.serializedBytes() as Data)
        // proto2 keeps explicitly set zero values: Type=0 (field 1), Term=0 (field 2), Index=5 (field 3)
        #expect(bytes == [0x08, 0, 0x10, 0, 0x18, 5])
    }

    @Test func jsonUsesEtcdFieldNames() throws {
        var range = Etcdserverpb_RangeRequest()
        range.key = Data("a".utf8)
        range.rangeEnd = Data("b".utf8)
        range.keysOnly = true
        let json = try range.jsonString()
        #expect(json == #"{"key":"YQ==","rangeEnd":"Yg==","keysOnly":true}"#)
        var options = JSONDecodingOptions()
        options.ignoreUnknownFields = false
        let parsed = try Etcdserverpb_RangeRequest(jsonString: #"{"key":"YQ==","range_end":"Yg==","keys_only":true}"#, options: options)
        #expect(parsed == range)
    }

    @Test func serviceDescriptorsCarryEtcdsMethodPaths() {
        #expect(Etcdserverpb_KV.Method.Range.descriptor.fullyQualifiedMethod == "etcdserverpb.KV/Range")
        #expect(Etcdserverpb_Watch.Method.Watch.descriptor.fullyQualifiedMethod == "etcdserverpb.Watch/Watch")
        #expect(V3lockpb_Lock.Method.Unlock.descriptor.fullyQualifiedMethod == "v3lockpb.Lock/Unlock")
        #expect(V3electionpb_Election.Method.Observe.descriptor.fullyQualifiedMethod == "v3electionpb.Election/Observe")
        #expect(Etcdserverpb_Maintenance.Method.Downgrade.descriptor.fullyQualifiedMethod == "etcdserverpb.Maintenance/Downgrade")
    }
}
