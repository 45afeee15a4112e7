import EtcdProto
import Foundation
import Testing
@testable import WAL

@Suite struct SnapshotterTests {
    private func makeSnapshot(term: UInt64, index: UInt64) -> Raftpb_Snapshot {
        var snapshot = Raftpb_Snapshot()
        snapshot.metadata.term = term
        snapshot.metadata.index = index
        snapshot.metadata.confState.voters = [1, 2, 3]
        snapshot.data = Data("state at \(index)".utf8)
        return snapshot
    }

    @Test func savesAndLoadsTheNewest() throws {
        try withTemporaryDirectory { temp in
            let snapshotter = Snapshotter(dir: temp.path + "/member/snap")
            #expect(try snapshotter.loadNewest() == nil)
            try snapshotter.save(makeSnapshot(term: 1, index: 10))
            try snapshotter.save(makeSnapshot(term: 2, index: 20))
            try snapshotter.save(makeSnapshot(term: 2, index: 15))
            try snapshotter.save(Raftpb_Snapshot())  // empty: ignored
            #expect(try snapshotter.snapshotFileNames() == [
                "0000000000000002-0000000000000014.snap",
                "0000000000000002-000000000000000f.snap",
                "0000000000000001-000000000000000a.snap",
            ])
            #expect(try snapshotter.loadNewest() == makeSnapshot(term: 2, index: 20))
            let files = try PosixFileSystem().contentsOfDirectory(atPath: snapshotter.directory)
            #expect(!files.contains { $0.hasSuffix(".tmp") })
        }
    }

    @Test func brokenFilesAreSkippedAndRenamed() throws {
        try withTemporaryDirectory { temp in
            let snapshotter = Snapshotter(dir: temp.path + "/snap")
            try snapshotter.save(makeSnapshot(term: 1, index: 10))
            try snapshotter.save(makeSnapshot(term: 1, index: 20))
            try snapshotter.save(makeSnapshot(term: 1, index: 30))
            let newest = snapshotter.directory + "/" + Snapshotter.fileName(term: 1, index: 30)
            let middle = snapshotter.directory + "/" + Snapshotter.fileName(term: 1, index: 20)
            var bytes = try readBytes(newest)
            bytes[bytes.count - 1] ^= 0x01
            try writeBytes(bytes, to: newest)
            try writeBytes([], to: middle)

            #expect(try snapshotter.loadNewest() == makeSnapshot(term: 1, index: 10))
            let names = Set(try PosixFileSystem().contentsOfDirectory(atPath: snapshotter.directory))
            #expect(names == [
                Snapshotter.fileName(term: 1, index: 10),
                Snapshotter.fileName(term: 1, index: 20) + ".broken",
                Snapshotter.fileName(term: 1, index: 30) + ".broken",
            ])
            #expect(throws: WALError.brokenSnapshotFile(path: middle + ".broken", reason: "empty file")) {
                try Snapshotter.read(path: middle + ".broken")
            }
        }
    }

    @Test func loadNewestAvailableMatchesWALMarkers() throws {
        try withTemporaryDirectory { temp in
            let walDir = temp.walDirectory
            let snapshotter = Snapshotter(dir: temp.path + "/member/snap")
            let wal = try WAL.create(dir: walDir, metadata: Data())
            try wal.save(hardState: makeHardState(term: 2, commit: 25), entries: (1...30).map { makeEntry(index: $0, term: 2) }, mustSync: true)
            for index: UInt64 in [10, 20] {
                try snapshotter.save(makeSnapshot(term: 2, index: index))
                try wal.saveSnapshot(WALSnapshot(makeSnapshot(term: 2, index: index)))
            }
            // A snapshot file written, but the crash came before its marker.
            try snapshotter.save(makeSnapshot(term: 2, index: 30))
            wal.close()

            let markers = try WAL.validSnapshots(dir: walDir)
            #expect(markers.map(\.index) == [0, 10, 20])
            let chosen = try #require(try snapshotter.loadNewestAvailable(among: markers))
            #expect(chosen.metadata.index == 20)
            #expect(try snapshotter.loadNewest()?.metadata.index == 30)

            let reopened = try WAL.open(dir: walDir, at: WALSnapshot(chosen))
            #expect(try reopened.readAll().entries.map(\.index) == Array(21...30))
            reopened.close()
        }
    }
}
