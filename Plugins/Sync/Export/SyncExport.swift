import SyncPlugin

@_cdecl("csop_plugin_register")
public func csopPluginRegister() -> UnsafeRawPointer { syncPluginDescriptor() }
