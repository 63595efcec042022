import Glibc

/// A scratch directory removed (with its files) when the test ends, pass or fail.
final class ScratchDirectory {
    let path: String

    init() {
        var template = Array("/tmp/diskimage-test.XXXXXX".utf8CString)
        path = template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)!) }
    }

    deinit {
        if let dir = opendir(path) {
            while let entry = readdir(dir) {
                let name = withUnsafeBytes(of: entry.pointee.d_name) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
                if name != "." && name != ".." { unlink(path + "/" + name) }
            }
            closedir(dir)
        }
        rmdir(path)
    }
}

/// Runs a program (PATH lookup), its output discarded; returns the exit status or -1.
func run(_ argv: [String]) -> Int32 {
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
    posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
    var cArgs = argv.map { strdup($0) } + [nil]
    defer { cArgs.forEach { free($0) } }
    var pid: pid_t = 0
    guard posix_spawnp(&pid, argv[0], &actions, nil, &cArgs, environ) == 0 else { return -1 }
    var status: Int32 = 0
    while waitpid(pid, &status, 0) < 0 { guard errno == EINTR else { return -1 } }
    return (status & 0x7f) == 0 ? (status >> 8) & 0xff : -1
}

func programExists(_ name: String) -> Bool {
    let dirs = ((getenv("PATH").map { String(cString: $0) } ?? "") + ":/usr/sbin:/sbin").split(separator: ":")
    return dirs.contains { access("\($0)/\(name)", X_OK) == 0 }
}

/// Tools/make-test-image of this checkout, found from this file's real location.
let makeTestImage: String = {
    var resolved = [CChar](repeating: 0, count: Int(PATH_MAX))
    let file = realpath(#filePath, &resolved) != nil
        ? resolved.withUnsafeBufferPointer { String(cString: $0.baseAddress!) } : #filePath
    var parts = file.split(separator: "/", omittingEmptySubsequences: false)
    parts.removeLast(3)  // Tests/DiskImageTests/TestSupport.swift
    return parts.joined(separator: "/") + "/Tools/make-test-image"
}()



/// A shell command's standard output (stderr discarded), or nil when it cannot start or fails.
func output(ofShell command: String) -> String? {
    guard let pipe = popen(command + " 2>/dev/null", "r") else { return nil }
    var text = [UInt8]()
    var buffer = [UInt8](repeating: 0, count: 4096)
    while true {
        let n = fread(&buffer, 1, buffer.count, pipe)
        if n == 0 { break }
        text += buffer[0..<n]
    }
    return pclose(pipe) == 0 ? String(decoding: text, as: UTF8.self) : nil
}
