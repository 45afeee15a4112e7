/// The key ranges one user may read, or write: the union of the half-open
/// intervals its roles grant, kept merged and sorted so a check is a binary
/// search. etcd keeps an interval tree per user and asks whether the
/// intervals that meet a request cover it without a gap; a merged union
/// answers the same question.
///
/// Bounds follow etcd's "affine" byte order: an empty bound is +infinity
/// (so a permission or request whose range end is "\0" reaches every key
/// after its start).
public struct KeyIntervals: Sendable, Equatable {
    /// A bound; `nil` is +infinity.
    typealias Bound = [UInt8]?

    /// Disjoint, non-touching, sorted by start.
    private(set) var intervals: [(start: Bound, end: Bound)] = []

    public init() {}

    public static func == (lhs: KeyIntervals, rhs: KeyIntervals) -> Bool {
        lhs.intervals.count == rhs.intervals.count
            && zip(lhs.intervals, rhs.intervals).allSatisfy { $0.start == $1.start && $0.end == $1.end }
    }

    /// -1, 0, 1 as `a` sorts before, with, after `b` (nil last).
    static func compare(_ a: Bound, _ b: Bound) -> Int {
        switch (a, b) {
        case (nil, nil): return 0
        case (nil, _): return 1
        case (_, nil): return -1
        case let (a?, b?):
            for (x, y) in zip(a, b) where x != y { return x < y ? -1 : 1 }
            return a.count == b.count ? 0 : (a.count < b.count ? -1 : 1)
        }
    }

    /// An affine bound from key bytes (empty: +infinity).
    static func bound(_ bytes: [UInt8]) -> Bound { bytes.isEmpty ? nil : bytes }

    /// The interval a permission or request names: a single key when
    /// `rangeEnd` is empty, from `key` on when it is "\0", else
    /// [key, rangeEnd).
    static func interval(key: [UInt8], rangeEnd: [UInt8]) -> (start: Bound, end: Bound) {
        if rangeEnd.isEmpty { return (bound(key), key.isEmpty ? nil : key + [0]) }
        if rangeEnd == [0] { return (bound(key), nil) }
        return (bound(key), bound(rangeEnd))
    }

    /// Adds [start, end), merging what it overlaps or touches.
    mutating func insert(start: Bound, end: Bound) {
        // An empty or inverted interval grants nothing.
        guard Self.compare(start, end) < 0 else { return }
        var merged = (start: start, end: end)
        var kept: [(start: Bound, end: Bound)] = []
        kept.reserveCapacity(intervals.count + 1)
        var placed = false
        for existing in intervals {
            if Self.compare(existing.end, merged.start) < 0 {
                kept.append(existing)
            } else if Self.compare(merged.end, existing.start) < 0 {
                if !placed { kept.append(merged); placed = true }
                kept.append(existing)
            } else {
                if Self.compare(existing.start, merged.start) < 0 { merged.start = existing.start }
                if Self.compare(existing.end, merged.end) > 0 { merged.end = existing.end }
            }
        }
        if !placed { kept.append(merged) }
        intervals = kept
    }

    public mutating func insert(key: [UInt8], rangeEnd: [UInt8]) {
        let interval = Self.interval(key: key, rangeEnd: rangeEnd)
        insert(start: interval.start, end: interval.end)
    }

    /// Whether the union covers the whole request: the key itself when
    /// `rangeEnd` is empty, [key, rangeEnd) otherwise ("\0": to the end).
    public func covers(key: [UInt8], rangeEnd: [UInt8]) -> Bool {
        let wanted = Self.interval(key: key, rangeEnd: rangeEnd)
        // The last interval starting at or before the request's start.
        var low = 0, high = intervals.count
        while low < high {
            let mid = (low + high) / 2
            if Self.compare(intervals[mid].start, wanted.start) <= 0 { low = mid + 1 } else { high = mid }
        }
        guard low > 0 else { return false }
        let candidate = intervals[low - 1]
        if rangeEnd.isEmpty {
            // A point: inside when the interval ends after it.
            return Self.compare(wanted.start, candidate.end) < 0
        }
        return Self.compare(wanted.end, candidate.end) <= 0
    }
}

/// A user's merged read and write grants.
public struct UserPermissions: Sendable, Equatable {
    public var read = KeyIntervals()
    public var write = KeyIntervals()

    public init() {}
}
