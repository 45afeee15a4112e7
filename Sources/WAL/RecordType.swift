/// Kinds of record in a WAL segment (walpb.Record.type), numbered as etcd
/// numbers them so its tools can read our logs.
public enum WALRecordType: Int64, Sendable {
    case metadata = 1
    case entry = 2
    case state = 3
    case crc = 4
    case snapshot = 5
}
