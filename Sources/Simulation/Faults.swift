import EtcdProto
import EtcdServer
import Foundation

extension SimWorld {
    /// Faults at random times until `end`: crashes with restarts, pauses,
    /// partitions (both ways and one way), lossy/duplicating/slow networks,
    /// a slow member (its disk or link), and leader transfers; in some runs
    /// one corrupted member (see Corruption.swift). Several can overlap;
    /// every one heals by itself (and `heal()` clears the rest).
    func scheduleFaults(until end: Int64) {
        if options.members >= 3 && random.chance(0.3) {
            queue.schedule(at: random.int(1_000_000...end * 2 / 3)) { [self] in corruptMember() }
        }
        var time = random.int(300_000...1_500_000)
        while time < end {
            let at = time
            let choice = random.next() % 100
            let duration = random.int(300_000...3_500_000)
            queue.schedule(at: at) { [self] in inject(choice, duration: duration) }
            time += random.int(400_000...2_500_000)
        }
    }

    private func inject(_ choice: UInt64, duration: Int64) {
        guard !clientsStopped else { return }
        let single = nodes.count == 1
        let nodes = liveNodes
        switch choice {
        case 0..<22:
            guard let victim = pickNode() else { return }
            count("crash")
            crash(victim)
            schedule(after: duration) { [self] in
                if !clientsStopped { start(victim) }
            }
        case 22..<34:
            guard let victim = pickNode() else { return }
            count("pause")
            log("\(victim.name) paused for \(duration / 1000) ms")
            victim.pausedUntil = max(victim.pausedUntil, now + duration)
        case 34..<50 where !single:
            // Cut one member off, both ways.
            let victim = nodes[random.index(nodes.count)]
            count("partition")
            log("\(victim.name) partitioned for \(duration / 1000) ms")
            let links = nodes.filter { $0 !== victim }.flatMap { other in
                [NetworkFaults.Link(from: victim.id, to: other.id), NetworkFaults.Link(from: other.id, to: victim.id)]
            }
            block(links, for: duration)
        case 50..<60 where !single:
            // One direction of one link.
            let a = nodes[random.index(nodes.count)]
            let others = nodes.filter { $0 !== a }
            let b = others[random.index(others.count)]
            count("one-way-partition")
            log("\(a.name) → \(b.name) cut for \(duration / 1000) ms")
            block([NetworkFaults.Link(from: a.id, to: b.id)], for: duration)
        case 60..<66 where nodes.count == 5:
            // A majority/minority split.
            let minority = Set(nodes.indices.shuffled(using: &random).prefix(2))
            count("split")
            log("split: \(minority.sorted()) vs the rest for \(duration / 1000) ms")
            var links: [NetworkFaults.Link] = []
            for i in nodes.indices where minority.contains(i) {
                for j in nodes.indices where !minority.contains(j) {
                    links.append(NetworkFaults.Link(from: nodes[i].id, to: nodes[j].id))
                    links.append(NetworkFaults.Link(from: nodes[j].id, to: nodes[i].id))
                }
            }
            block(links, for: duration)
        case 66..<78 where !single:
            count("bad-network")
            let loss = Double(random.int(0...30)) / 100
            let duplicate = Double(random.int(0...10)) / 100
            let delay = random.int(0...40_000)
            log("network: loss \(loss), duplicates \(duplicate), extra delay up to \(delay / 1000) ms for \(duration / 1000) ms")
            faults.lossRate = loss
            faults.duplicateRate = duplicate
            faults.extraDelay = 0...delay
            schedule(after: duration) { [self] in
                faults.lossRate = 0
                faults.duplicateRate = 0
                faults.extraDelay = 0...0
            }
        case 78..<82:
            // The store fills up to this seed's small quota (Quota.swift).
            startFill(duration: duration)
        case 82..<88:
            // A slow disk or link: everything the member sends is late.
            guard let victim = pickNode() else { return }
            let delay = random.int(20_000...300_000)
            count("slow-member")
            log("\(victim.name) slow by \(delay / 1000) ms for \(duration / 1000) ms")
            faults.slowSender[victim.id] = delay
            schedule(after: duration) { [self] in faults.slowSender[victim.id] = nil }
        case 88..<94 where !single:
            guard let leader, let member = leader.member else { return }
            let others = nodes.filter { $0 !== leader && $0.member != nil && !$0.learner }
            guard !others.isEmpty else { return }
            let target = others[random.index(others.count)]
            count("leader-transfer")
            log("leader transfer \(leader.name) → \(target.name)")
            member.requestLeaderTransfer(to: target.id)
            settle(leader)
        case 94..<100 where !single:
            changeMembership()
            if let leader { settle(leader) }
        default:
            return
        }
    }

    static func alarm(_ action: Etcdserverpb_AlarmRequest.AlarmAction, _ member: UInt64) -> Etcdserverpb_InternalRaftRequest {
        var request = Etcdserverpb_InternalRaftRequest()
        request.alarm.action = action
        request.alarm.memberID = member
        request.alarm.alarm = .nospace
        return request
    }

    private func block(_ links: [NetworkFaults.Link], for duration: Int64) {
        let added = links.filter { !faults.blocked.contains($0) }
        faults.blocked.formUnion(added)
        schedule(after: duration) { [self] in faults.blocked.subtract(added) }
    }
}
