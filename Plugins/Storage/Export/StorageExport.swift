import StoragePlugin

@_cdecl("csop_plugin_register")
public func csopPluginRegister() -> UnsafeRawPointer { storagePluginDescriptor() }
