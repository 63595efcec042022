// Tools/bench/run fat's measuring side, compiled with Sources/FATFS/*.swift (-O): opens the image's FAT
// volume read-only, lists the root, reads one file, and prints the times (seconds) as JSON.
//   fat-bench-bin IMAGE PATH_IN_VOLUME
import Glibc

func now() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}

@main
struct FATBench {
    static func main() throws {
        let args = CommandLine.arguments
        guard args.count == 3 else { print("usage: fat-bench-bin IMAGE FILE"); exit(2) }
        let fd = open(args[1], O_RDONLY)
        guard fd >= 0 else { print("cannot open \(args[1])"); exit(1) }
        var st = stat()
        fstat(fd, &st)
        let device = FileRegionDevice(fd: fd, offset: 0, size: UInt64(st.st_size), writable: false)
        let t0 = now()
        let volume = try FATVolume(device: device, readOnly: true)
        let t1 = now()
        var names = 0
        var offset: UInt64 = 0
        while true {
            let part = try volume.readDirectory(FATVolume.rootID, from: offset, limit: 128)
            guard let last = part.last else { break }
            for entry in part where entry.name != "." && entry.name != ".." {
                _ = try volume.lookup(parent: FATVolume.rootID, name: entry.name)   // ls -l: a lookup per entry
                names += 1
            }
            offset = last.nextOffset
        }
        let t2 = now()
        var node = try volume.getattr(FATVolume.rootID)
        for part in args[2].split(separator: "/") { node = try volume.lookup(parent: node.id, name: String(part)) }
        var buffer = [UInt8](repeating: 0, count: 128 << 10)   // FUSE's largest read
        var position: UInt64 = 0
        var sum: UInt64 = 0
        while true {
            let n = try buffer.withUnsafeMutableBytes { b in try volume.read(node.id, at: position, into: b) }
            if n == 0 { break }
            sum &+= UInt64(buffer[n - 1])
            position += UInt64(n)
        }
        let t3 = now()
        print("{\"open_s\": \(t1 - t0), \"list_root_s\": \(t2 - t1), \"root_entries\": \(names), "
            + "\"read_s\": \(t3 - t2), \"read_bytes\": \(position), \"checksum\": \(sum)}")
    }
}
