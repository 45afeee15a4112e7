extension Duration {
    /// Whole seconds, truncated toward zero (Go's `int64(d.Seconds())`).
    var truncatedSeconds: Int64 {
        let (seconds, attoseconds) = components
        if seconds > 0 && attoseconds < 0 { return seconds - 1 }
        if seconds < 0 && attoseconds > 0 { return seconds + 1 }
        return seconds
    }

    /// Whole seconds, rounded up (Go's `math.Ceil(d.Seconds())`).
    var ceiledSeconds: Int64 {
        let (seconds, attoseconds) = components
        return attoseconds > 0 ? seconds + 1 : seconds
    }
}
