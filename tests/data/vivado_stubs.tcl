# Vivado command stubs for tests/test_hw_compile.py: each call is logged to calls.log and
# returns a plausible value, so block_design.tcl's own Tcl (file copies, path rewriting,
# checks, outputs) runs in tclsh. Not Vivado: no command here does what Vivado would.
set ::cfg [dict create]
set ::log [open [file join [pwd] calls.log] w]
proc L {args} { puts $::log $args; flush $::log }
foreach c {create_project add_files update_compile_order create_bd_design apply_bd_automation
           connect_bd_net connect_bd_intf_net save_bd_design validate_bd_design generate_target
           make_wrapper set_msg_config wait_on_run open_run report_utilization report_timing_summary
           close_project set_param assign_bd_address} {
    proc $c {args} "L $c {*}\$args; return {}"
}
proc get_board_parts {args} { return [lindex $args end] }
proc current_project {} { return prj }
proc get_filesets {a} { return $a }
proc get_files {args} { return [lindex $args end] }
proc get_ipdefs {args} { return ipdef }
proc get_runs {r} { return $r }
proc get_bd_cells {args} { return {zynq_ps proc_sys_reset_0 axi_interconnect_0 smartconnect_0 axi_dma_0 fluorofpga_0} }
proc get_bd_nets {args} { return {} }
proc get_bd_addr_spaces {a} { return $a }
proc get_bd_addr_segs {args} { return [list SEG_[lindex $args end]] }
proc get_bd_pins {args} {
    if {[lsearch $args -filter] >= 0} { return {} }
    return [lindex $args end]
}
proc get_bd_intf_pins {args} { return [lindex $args end] }
proc create_bd_cell {args} { L create_bd_cell {*}$args; return [lindex $args end] }
proc launch_runs {args} {
    L launch_runs {*}$args
    file mkdir [file join [pwd] vivado_prj runs impl_1] [file join [pwd] vivado_prj runs synth_1]
    set fh [open [file join [pwd] vivado_prj runs impl_1 top_wrapper.bit] w]; close $fh
    set d [file join [pwd] vivado_prj $::name.gen sources_1 bd top hw_handoff]; file mkdir $d
    set fh [open [file join $d top.hwh] w]; close $fh
    set fh [open [file join [pwd] vivado_prj runs synth_1 runme.log] w]; puts $fh ok; close $fh
}
proc get_timing_paths {args} { return path }
proc set_property {args} {
    L set_property {*}$args
    if {[lindex $args 0] eq "-dict"} { foreach {k v} [lindex $args 1] { dict set ::cfg $k $v } }
}
proc get_property {p obj} {
    switch -glob -- $p {
        PART { return $::fpga_part }
        PROGRESS { return 100% }
        STATUS { return ok }
        DIRECTORY { return [file join [pwd] vivado_prj runs $obj] }
        SLACK { return $::test_slack }
        VLNV { return xilinx.com:ip:x:1.0 }
        CONFIG.*ACT* { return 199.998 }
        CONFIG.* { if {[dict exists $::cfg $p]} { return [dict get $::cfg $p] } ; return 0 }
        default { return "" }
    }
}
proc get_param {p} { return {} }
