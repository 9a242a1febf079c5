import CSOPCore

/// How a wasm call failed, in either engine (``WasmRunner``, ``WasmJIT``), beside bad arguments
/// (`invalid`). ``ComputeWorker`` words them into the task's error.
enum WasmFailure: Error {
    case invalid(CSOPError)
    /// The interpreter's fuel budget ran out.
    case outOfFuel(budget: UInt64)
    /// A trap, with its kind (in WasmKit's words), and the memory size refused before it, if one was.
    case trap(String, refusedMemory: Int?)
    /// The module asks for more initial memory than the cap.
    case initialMemory(Int)
    /// The output (pointer, length) does not lie in memory, or is not what `output` says.
    case badOutput(String)
    case tooLarge
    /// ``WasmJIT`` stopped the call: its time ran out, or its call was cancelled.
    case stopped(WasmJIT.Stop)
}
